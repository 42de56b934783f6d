//! Outbound HTTPS clients for marketplace APIs.

use crate::tls::install_crypto_provider;
use marketbridge_config::TlsOptions;
use marketbridge_core::{Error, ErrorCode, Result};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// `User-Agent` of every outbound call.
pub const USER_AGENT: &str = concat!("marketbridge/", env!("CARGO_PKG_VERSION"));

/// An HTTP client with the system's roots plus `tls.outbound_extra_ca`, and
/// timeouts that keep one slow marketplace from holding a worker.
///
/// Building a client reads and parses every root certificate of the system
/// (several milliseconds), so the process keeps one client per extra CA and
/// timeout and hands out clones, which share its connection pool.
pub fn outbound_client(tls: &TlsOptions, timeout: Duration) -> Result<reqwest::Client> {
    type Built = HashMap<(Vec<u8>, Duration), reqwest::Client>;
    static BUILT: OnceLock<Mutex<Built>> = OnceLock::new();
    let extra_ca = match tls.outbound_extra_ca.as_str() {
        "" => Vec::new(),
        path => std::fs::read(path)
            .map_err(|e| Error::validation(format!("cannot read tls.outbound_extra_ca: {e}")))?,
    };
    let key = (extra_ca, timeout);
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(client) = built.get(&key) {
        return Ok(client.clone());
    }
    let client = build_client(&key.0, timeout)?;
    built.insert(key, client.clone());
    Ok(client)
}

fn build_client(extra_ca: &[u8], timeout: Duration) -> Result<reqwest::Client> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(60));
    if !extra_ca.is_empty() {
        let certificate = reqwest::Certificate::from_pem(extra_ca).map_err(|e| {
            Error::validation(format!(
                "tls.outbound_extra_ca is not a PEM certificate: {e}"
            ))
        })?;
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build()
        .map_err(|e| Error::internal(format!("HTTP client: {e}")))
}

/// An answer from an outbound call.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Vec<u8>,
}

impl HttpAnswer {
    /// The body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::internal(format!("unexpected answer ({}): {e}", self.status)))
    }

    /// The body as text (for errors and logs), at most 500 characters.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body)
            .chars()
            .take(500)
            .collect()
    }
}

/// Sends `request` to `peer` inside a client span, with the trace context
/// injected, and records its latency under `route` (a path template, not
/// the concrete path). Any answer is returned, whatever its status; only
/// transport failures are errors (`unavailable` or `timeout`).
pub async fn send_traced(
    request: reqwest::RequestBuilder,
    peer: &str,
    route: &str,
) -> Result<HttpAnswer> {
    use tracing::Instrument;
    let (client, request) = request.build_split();
    let mut request = request.map_err(|e| Error::internal(format!("cannot build request: {e}")))?;
    let method = request.method().to_string();
    marketbridge_telemetry::transactions::check_no_open_transaction(format_args!(
        "{method} {route} at {peer}"
    ));
    let span = marketbridge_telemetry::outbound_http_span(peer, &method, route);
    let started = std::time::Instant::now();
    let result = async {
        marketbridge_telemetry::inject_current_context(request.headers_mut());
        client.execute(request).await
    }
    .instrument(span.clone())
    .await;
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            marketbridge_telemetry::metrics().record_http_client(peer, route, 0, started.elapsed());
            let code = if error.is_timeout() {
                ErrorCode::Timeout
            } else {
                ErrorCode::Unavailable
            };
            return Err(Error::new(
                code,
                format!("{method} {route} at {peer} failed: {error}"),
            ));
        }
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .map_err(|e| {
            Error::unavailable(format!(
                "{method} {route} at {peer}: reading the answer failed: {e}"
            ))
        })?
        .to_vec();
    marketbridge_telemetry::record_http_status(&span, status);
    marketbridge_telemetry::metrics().record_http_client(peer, route, status, started.elapsed());
    Ok(HttpAnswer {
        status,
        headers,
        body,
    })
}

/// The error an unsuccessful answer stands for: 429 and 5xx (and 408) are
/// transient, other 4xx are refusals.
pub fn error_for_status(answer: &HttpAnswer, what: &str) -> Error {
    let detail = format!("{what} answered {}: {}", answer.status, answer.text());
    let code = match answer.status {
        429 => ErrorCode::RateLimited,
        408 | 500..=599 => ErrorCode::Unavailable,
        404 => ErrorCode::NotFound,
        409 => ErrorCode::Conflict,
        400 => ErrorCode::Validation,
        401 | 403 => ErrorCode::PermissionDenied,
        422 => ErrorCode::Unprocessable,
        _ => ErrorCode::Internal,
    };
    Error::new(code, detail)
}

/// The `Retry-After` delay of an answer, in seconds, when it gives one.
pub fn retry_after_seconds(answer: &HttpAnswer) -> Option<u64> {
    answer
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}
