//! What every simulator shares: RSA signing keys with their JWKS, a recorder
//! of received requests, fault injection, and serving on a loopback port.

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// An RSA key that signs RS256 tokens and publishes itself as a JWK.
pub struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    modulus: String,
    exponent: String,
    pkcs8_pem: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh 2048-bit key named `kid`.
    pub fn generate(kid: impl Into<String>) -> Self {
        let private =
            rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA key generation");
        let der = private.to_pkcs1_der().expect("PKCS#1 encoding");
        let pkcs8_pem = private
            .to_pkcs8_pem(LineEnding::LF)
            .expect("PKCS#8 encoding")
            .to_string();
        let public = private.to_public_key();
        Self {
            kid: kid.into(),
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            modulus: URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            exponent: URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
            pkcs8_pem,
        }
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        json!({"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256", "n": self.modulus, "e": self.exponent})
    }

    /// The private key in PKCS#8 PEM (service-account key files).
    pub fn private_key_pem(&self) -> &str {
        &self.pkcs8_pem
    }

    /// Signs `claims` as an RS256 JWT with this key's `kid`.
    pub fn sign(&self, claims: &impl Serialize) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("JWT signing")
    }
}

/// A JWKS document of the given keys.
pub fn jwks(keys: &[&SigningKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
}

/// One request a simulator received.
#[derive(Debug, Clone, Serialize)]
pub struct RecordedCall {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query string.
    pub query: String,
    /// Headers, lower-case names.
    pub headers: BTreeMap<String, String>,
    /// Body as text.
    pub body: String,
    /// Status the simulator answered.
    pub status: u16,
    /// When it arrived.
    pub at: DateTime<Utc>,
}

impl RecordedCall {
    /// The body parsed as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// Every request a simulator's API received, in order.
#[derive(Debug, Default)]
pub struct Recorder {
    calls: Mutex<Vec<RecordedCall>>,
}

impl Recorder {
    /// Records a call.
    pub fn record(&self, call: RecordedCall) {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(call);
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Calls with this method whose path contains `fragment`.
    pub fn calls_to(&self, method: &str, fragment: &str) -> Vec<RecordedCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method && c.path.contains(fragment))
            .collect()
    }

    /// Successful (2xx) calls with this method whose path contains `fragment`.
    pub fn accepted(&self, method: &str, fragment: &str) -> Vec<RecordedCall> {
        self.calls_to(method, fragment)
            .into_iter()
            .filter(|c| (200..300).contains(&c.status))
            .collect()
    }

    /// Forgets every call.
    pub fn clear(&self) {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// A failure to inject into matching requests.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Method to match; `None` for any.
    pub method: Option<String>,
    /// Path fragment to match.
    pub path_contains: String,
    /// How many matching requests fail.
    pub remaining: u32,
    /// Status to answer; `None` only delays.
    pub status: Option<u16>,
    /// Delay before answering (a slow or timing-out server).
    pub delay: Duration,
    /// `Retry-After` seconds to send with the failure.
    pub retry_after: Option<u64>,
    /// Serve the request first, then answer `status` instead of the real
    /// answer: the marketplace acted, but its answer was lost on the way.
    pub answer_lost: bool,
}

impl Fault {
    /// `times` matching requests answer `status`.
    pub fn status(path_contains: impl Into<String>, status: u16, times: u32) -> Self {
        Self {
            method: None,
            path_contains: path_contains.into(),
            remaining: times,
            status: Some(status),
            delay: Duration::ZERO,
            retry_after: None,
            answer_lost: false,
        }
    }

    /// `times` matching requests are served, but answer `status` instead of
    /// the real answer (a connection lost after the marketplace acted).
    pub fn answer_lost(path_contains: impl Into<String>, status: u16, times: u32) -> Self {
        Self {
            answer_lost: true,
            ..Self::status(path_contains, status, times)
        }
    }

    /// `times` matching requests wait `delay` before being served normally.
    pub fn slow(path_contains: impl Into<String>, delay: Duration, times: u32) -> Self {
        Self {
            method: None,
            path_contains: path_contains.into(),
            remaining: times,
            status: None,
            delay,
            retry_after: None,
            answer_lost: false,
        }
    }

    /// Only requests with this method match.
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_owned());
        self
    }
}

/// Faults waiting to be injected.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Vec<Fault>>,
}

impl Faults {
    /// Adds a fault.
    pub fn inject(&self, fault: Fault) {
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(fault);
    }

    /// Removes every fault (the marketplace recovers).
    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Takes one use of the first fault matching the request.
    fn take(&self, method: &str, path: &str) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        let index = rules.iter().position(|rule| {
            rule.remaining > 0
                && path.contains(&rule.path_contains)
                && rule
                    .method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
        })?;
        rules[index].remaining -= 1;
        let fault = rules[index].clone();
        if rules[index].remaining == 0 {
            rules.remove(index);
        }
        Some(fault)
    }
}

/// Recording and fault injection for a simulator's API.
#[derive(Debug, Default)]
pub struct Observed {
    /// What was received.
    pub recorder: Recorder,
    /// What will fail.
    pub faults: Faults,
}

/// Middleware that injects faults and records every request and its status.
pub async fn observe(
    State(observed): State<Arc<Observed>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, 4 * 1024 * 1024).await.unwrap_or_default();
    let method = parts.method.to_string();
    let path = parts.uri.path().to_owned();
    let mut call = RecordedCall {
        method: method.clone(),
        path: path.clone(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&bytes).into_owned(),
        status: 0,
        at: Utc::now(),
    };
    if let Some(fault) = observed.faults.take(&method, &path) {
        if !fault.delay.is_zero() {
            tokio::time::sleep(fault.delay).await;
        }
        if fault.answer_lost {
            let served = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            let status = fault.status.unwrap_or(502);
            tracing::debug!(
                served = served.status().as_u16(),
                status,
                "answer lost on purpose"
            );
            call.status = status;
            observed.recorder.record(call);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            return (
                status,
                axum::Json(json!({"error": {"code": "injected", "message": "answer lost"}})),
            )
                .into_response();
        }
        if let Some(status) = fault.status {
            call.status = status;
            observed.recorder.record(call);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (
                status,
                axum::Json(json!({"error": {"code": "injected", "message": "injected failure"}})),
            )
                .into_response();
            if let Some(seconds) = fault.retry_after
                && let Ok(value) = seconds.to_string().parse()
            {
                response.headers_mut().insert("retry-after", value);
            }
            return response;
        }
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    call.status = response.status().as_u16();
    observed.recorder.record(call);
    response
}

/// A simulator serving on a loopback port until dropped or stopped.
#[derive(Debug)]
pub struct SimServer {
    /// Base URL, `http://127.0.0.1:<port>`.
    pub url: String,
    /// The bound address.
    pub address: SocketAddr,
    shutdown: CancellationToken,
}

impl SimServer {
    /// Serves `router` on `address` (port 0 picks a free port).
    pub async fn start(router: Router, address: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        Ok(Self {
            url: format!("http://{address}"),
            address,
            shutdown,
        })
    }

    /// Stops serving.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
