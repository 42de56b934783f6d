//! Runs the provisioning service alone: `marketbridge-provisioning [--config FILE]`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    marketbridge_rpc::process::run_process(
        "marketbridge-provisioning",
        |config, shutdown| async move { marketbridge_provisioning::run(&config, shutdown).await },
    )
}
