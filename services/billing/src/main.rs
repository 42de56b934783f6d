//! Runs the billing service alone: `marketbridge-billing [--config FILE]`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    marketbridge_rpc::process::run_process("marketbridge-billing", |config, shutdown| async move {
        marketbridge_billing::run(&config, shutdown).await
    })
}
