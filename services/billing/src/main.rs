//! Runs the billing service alone: `marketbridge-billing [--config FILE]`.

fn main() -> std::process::ExitCode {
    marketbridge_rpc::process::run_process("marketbridge-billing", |config, shutdown| async move {
        marketbridge_billing::run(&config, shutdown).await
    })
}
