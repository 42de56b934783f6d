//! Health probes for container images, which carry no other tools.

use marketbridge_core::{Error, Result};
use std::time::Duration;

/// Checks `target`: `grpc://host:port` must report SERVING on the gRPC
/// health service; `http://…` or `https://…` must answer 2xx.
pub async fn probe(target: &str) -> Result<()> {
    if let Some(address) = target.strip_prefix("grpc://") {
        let clients = marketbridge_rpc::ServiceClients::connect(
            &format!("http://{address}"),
            &format!("http://{address}"),
            &format!("http://{address}"),
            // Health needs no credentials.
            &marketbridge_rpc::ClientCredentials::default(),
            Duration::from_secs(2),
        )?;
        return match clients.unhealthy().await.is_empty() {
            true => Ok(()),
            false => Err(Error::unavailable(format!("{target} is not serving"))),
        };
    }
    if target.starts_with("http://") || target.starts_with("https://") {
        let client = marketbridge_rpc::http::outbound_client(
            &marketbridge_config::TlsOptions::default(),
            Duration::from_secs(3),
        )?;
        let response = client
            .get(target)
            .send()
            .await
            .map_err(|e| Error::unavailable(format!("{target}: {e}")))?;
        return match response.status().is_success() {
            true => Ok(()),
            false => Err(Error::unavailable(format!(
                "{target} answered {}",
                response.status()
            ))),
        };
    }
    Err(Error::validation(format!(
        "cannot probe `{target}`: use grpc://host:port or an http(s) URL"
    )))
}
