//! Runs the account service alone: `marketbridge-account [--config FILE]`.

fn main() -> std::process::ExitCode {
    marketbridge_rpc::process::run_process("marketbridge-account", |config, shutdown| async move {
        marketbridge_account::run(&config, shutdown).await
    })
}
