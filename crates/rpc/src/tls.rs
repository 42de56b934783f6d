//! TLS material and the process-wide rustls crypto provider (ring).

use marketbridge_config::TlsOptions;
use marketbridge_core::{Error, Result};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Installs ring as rustls' crypto provider, and as the RSA check of JSON
/// Web Tokens (see `jwt_crypto`), once per process. Every entry point calls
/// it before building a TLS client or server.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    crate::jwt_crypto::install();
}

fn read(path: &str, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::validation(format!("cannot read {what} `{path}`: {e}")))
}

/// The services' server TLS, when `tls.service_cert` is set; with
/// `tls.service_client_ca` clients must present a certificate (mTLS).
pub fn service_server_tls(options: &TlsOptions) -> Result<Option<ServerTlsConfig>> {
    if options.service_cert.is_empty() {
        return Ok(None);
    }
    install_crypto_provider();
    let identity = Identity::from_pem(
        read(&options.service_cert, "tls.service_cert")?,
        read(&options.service_key, "tls.service_key")?,
    );
    let mut config = ServerTlsConfig::new().identity(identity);
    if !options.service_client_ca.is_empty() {
        config = config.client_ca_root(Certificate::from_pem(read(
            &options.service_client_ca,
            "tls.service_client_ca",
        )?));
    }
    Ok(Some(config))
}

/// Client TLS towards the services, for `https://` service URLs.
pub fn service_client_tls(options: &TlsOptions) -> Result<ClientTlsConfig> {
    install_crypto_provider();
    let mut config = ClientTlsConfig::new();
    if options.client_ca.is_empty() {
        config = config.with_enabled_roots();
    } else {
        config = config.ca_certificate(Certificate::from_pem(read(
            &options.client_ca,
            "tls.client_ca",
        )?));
    }
    if !options.client_cert.is_empty() {
        config = config.identity(Identity::from_pem(
            read(&options.client_cert, "tls.client_cert")?,
            read(&options.client_key, "tls.client_key")?,
        ));
    }
    Ok(config)
}

/// PEM bytes of the gateway certificate and key, when HTTPS is configured.
pub fn gateway_pem(options: &TlsOptions) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    if options.gateway_cert.is_empty() {
        return Ok(None);
    }
    install_crypto_provider();
    Ok(Some((
        read(&options.gateway_cert, "tls.gateway_cert")?,
        read(&options.gateway_key, "tls.gateway_key")?,
    )))
}
