//! Runs the account service alone: `marketbridge-account [--config FILE]`.

use marketbridge_rpc::process::{load_cipher, run_process};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    run_process("marketbridge-account", |config, shutdown| async move {
        let cipher = load_cipher(&config, false)?;
        let server = marketbridge_account::AccountServer::from_config(
            &config,
            marketbridge_core::time::system_clock(),
            cipher,
        )
        .await?;
        let listener = tokio::net::TcpListener::bind(&config.account.listen)
            .await
            .map_err(|e| marketbridge_core::Error::unavailable(format!("cannot listen on {}: {e}", config.account.listen)))?;
        tracing::info!(listen = %config.account.listen, "account service listening");
        server.serve(listener, &config.tls, shutdown).await
    })
}
