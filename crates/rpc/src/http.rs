//! Outbound HTTPS clients for marketplace APIs.

use crate::tls::install_crypto_provider;
use marketbridge_config::TlsOptions;
use marketbridge_core::{Error, Result};
use std::time::Duration;

/// `User-Agent` of every outbound call.
pub const USER_AGENT: &str = concat!("marketbridge/", env!("CARGO_PKG_VERSION"));

/// An HTTP client with the system's roots plus `tls.outbound_extra_ca`, and
/// timeouts that keep one slow marketplace from holding a worker.
pub fn outbound_client(tls: &TlsOptions, timeout: Duration) -> Result<reqwest::Client> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(60));
    if !tls.outbound_extra_ca.is_empty() {
        let pem = std::fs::read(&tls.outbound_extra_ca)
            .map_err(|e| Error::validation(format!("cannot read tls.outbound_extra_ca: {e}")))?;
        let certificate = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| Error::validation(format!("tls.outbound_extra_ca is not a PEM certificate: {e}")))?;
        builder = builder.add_root_certificate(certificate);
    }
    builder.build().map_err(|e| Error::internal(format!("HTTP client: {e}")))
}
