//! Runs the gateway alone: `marketbridge-gateway [--config FILE]`.

fn main() -> std::process::ExitCode {
    marketbridge_rpc::process::run_process("marketbridge-gateway", |config, shutdown| async move {
        marketbridge_gateway::run(&config, shutdown).await
    })
}
