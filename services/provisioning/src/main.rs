//! Runs the provisioning service alone: `marketbridge-provisioning [--config FILE]`.

fn main() -> std::process::ExitCode {
    marketbridge_rpc::process::run_process(
        "marketbridge-provisioning",
        |config, shutdown| async move { marketbridge_provisioning::run(&config, shutdown).await },
    )
}
