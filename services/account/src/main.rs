//! Runs the account service alone: `marketbridge-account [--config FILE]`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    marketbridge_rpc::process::run_process("marketbridge-account", |config, shutdown| async move {
        marketbridge_account::run(&config, shutdown).await
    })
}
