//! The REST gateway marketplaces call. Each marketplace is an adapter here
//! ([`vercel`], [`google`]) that verifies its calls and translates its wire
//! contract into the neutral gRPC calls of the services.
//!
//! Architecture invariant: the gateway keeps no business state. Everything
//! it answers comes from the services; everything it is told goes to them.

pub mod aws;
pub mod azure;
pub mod connections;
pub mod console;
pub mod context;
pub mod cookies;
pub mod error;
pub mod google;
pub mod health;
pub mod openapi;
pub mod signup;
pub mod state;
pub mod vercel;

use crate::state::AppState;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use marketbridge_config::Config;
use marketbridge_core::time::SharedClock;
use marketbridge_core::{Error, Result};
use marketbridge_rpc::ServiceClients;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The gateway: its routes over the service clients.
#[derive(Clone)]
pub struct Gateway {
    state: AppState,
}

impl Gateway {
    /// A gateway calling the services through `clients`.
    pub fn new(config: &Config, clients: ServiceClients) -> Result<Self> {
        Self::with_clock(config, clients, marketbridge_core::time::system_clock())
    }

    /// A gateway whose token checks use `clock` (the set's clock in tests).
    pub fn with_clock(
        config: &Config,
        clients: ServiceClients,
        clock: SharedClock,
    ) -> Result<Self> {
        Ok(Self {
            state: AppState::with_clock(Arc::new(config.clone()), clients, clock)?,
        })
    }

    /// A gateway calling the services through `services` (in process when
    /// they run in this process), with `clients` for the operator console
    /// and the health checks.
    pub fn with_services(
        config: &Config,
        clients: ServiceClients,
        services: state::Services,
        clock: SharedClock,
    ) -> Result<Self> {
        Ok(Self {
            state: AppState::with_services(Arc::new(config.clone()), clients, services, clock)?,
        })
    }

    /// Every route, with tracing, metrics, a body limit and the deadline.
    pub fn router(&self) -> Router {
        let deadline = Duration::from_millis(self.state.config.gateway.request_timeout_ms.max(100));
        Router::new()
            .merge(openapi::router(&self.state))
            .with_state(self.state.clone())
            .layer(axum::middleware::from_fn(
                move |request: Request, next: Next| with_deadline(deadline, request, next),
            ))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(axum::middleware::from_fn(error::oversized_body_as_error))
            .layer(axum::middleware::from_fn(html_security_headers))
            .layer(axum::middleware::from_fn(
                marketbridge_telemetry::http_server_layer,
            ))
    }

    /// Serves HTTP (or HTTPS when `tls.gateway_cert` is set) on `listener`
    /// until `shutdown`, then lets in-flight requests finish.
    pub async fn serve(
        self,
        listener: std::net::TcpListener,
        shutdown: CancellationToken,
    ) -> Result<()> {
        let tls = marketbridge_rpc::tls::gateway_pem(&self.state.config.tls)?;
        let limits = connections::Limits::from_config(&self.state.config.gateway);
        let app = limits.make_service(self.router().into_make_service());
        let handle = axum_server::Handle::new();
        let stopper = handle.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            stopper.graceful_shutdown(Some(Duration::from_secs(10)));
        });
        let served = match tls {
            Some((cert, key)) => {
                let config = axum_server::tls_rustls::RustlsConfig::from_pem(cert, key)
                    .await
                    .map_err(|e| Error::validation(format!("gateway TLS: {e}")))?;
                let server = axum_server::from_tcp_rustls(listener, config)
                    .map_err(|e| Error::unavailable(format!("gateway listener: {e}")))?
                    .map(|tls| tls.acceptor(limits.acceptor()));
                limits.configure(server).handle(handle).serve(app).await
            }
            None => {
                let server = axum_server::from_tcp(listener)
                    .map_err(|e| Error::unavailable(format!("gateway listener: {e}")))?
                    .acceptor(limits.acceptor());
                limits.configure(server).handle(handle).serve(app).await
            }
        };
        served.map_err(|e| Error::internal(format!("gateway server failed: {e}")))
    }
}

/// `Content-Security-Policy` of every page: nothing loads but the page's
/// own inline style, forms post only to us, and no site may frame a page.
pub const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; \
     form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Adds the page headers to every HTML answer, whichever handler made it:
/// the CSP above, `X-Frame-Options: DENY` for older browsers, `nosniff` and
/// `Referrer-Policy: no-referrer`.
async fn html_security_headers(request: Request, next: Next) -> Response {
    use axum::http::{HeaderValue, header};
    let mut response = next.run(request).await;
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("text/html")
        });
    if is_html {
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_CSP),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    response
}

/// Answers 504 when a request outlives the end-to-end deadline.
async fn with_deadline(deadline: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error::generic_error_response(&Error::new(
            marketbridge_core::ErrorCode::Timeout,
            "the request did not finish in time",
        ))
        .into_response(),
    }
}

/// Runs the gateway alone as configured until `shutdown`.
pub async fn run(config: &Config, shutdown: CancellationToken) -> Result<()> {
    let config =
        &marketbridge_rpc::secrets::resolved(config, marketbridge_rpc::secrets::Needs::GATEWAY)?;
    let gateway = &config.gateway;
    let clients = ServiceClients::connect(
        &gateway.account_url,
        &gateway.provisioning_url,
        &gateway.billing_url,
        &marketbridge_rpc::ClientCredentials::of_set(config),
        Duration::from_millis(gateway.request_timeout_ms),
    )?;
    let listener = std::net::TcpListener::bind(&gateway.listen)
        .map_err(|e| Error::unavailable(format!("cannot listen on {}: {e}", gateway.listen)))?;
    tracing::info!(listen = %gateway.listen, "gateway listening");
    marketbridge_rpc::process::spawn_metrics_listener(&gateway.metrics_listen, shutdown.clone())
        .await?;
    Gateway::new(config, clients)?
        .serve(listener, shutdown)
        .await
}
