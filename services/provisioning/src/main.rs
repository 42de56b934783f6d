//! Runs the provisioning service alone: `marketbridge-provisioning [--config FILE]`.

use marketbridge_rpc::process::{load_cipher, run_process};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    run_process("marketbridge-provisioning", |config, shutdown| async move {
        let cipher = load_cipher(&config, false)?;
        let server = marketbridge_provisioning::ProvisioningServer::from_config(
            &config,
            marketbridge_core::time::system_clock(),
            cipher,
        )
        .await?;
        let listener = tokio::net::TcpListener::bind(&config.provisioning.listen).await.map_err(|e| {
            marketbridge_core::Error::unavailable(format!("cannot listen on {}: {e}", config.provisioning.listen))
        })?;
        tracing::info!(listen = %config.provisioning.listen, "provisioning service listening");
        server.serve(listener, &config.tls, shutdown).await
    })
}
