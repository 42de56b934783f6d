//! The REST gateway marketplaces call. Each marketplace is an adapter here
//! ([`vercel`], [`google`]) that verifies its calls and translates its wire
//! contract into the neutral gRPC calls of the services.
//!
//! Architecture invariant: the gateway keeps no business state. Everything
//! it answers comes from the services; everything it is told goes to them.

pub mod context;
pub mod error;
pub mod google;
pub mod health;
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

    /// Every route, with tracing, metrics, a body limit and the deadline.
    pub fn router(&self) -> Router {
        let deadline = Duration::from_millis(self.state.config.gateway.request_timeout_ms.max(100));
        Router::new()
            .merge(health::routes())
            .merge(vercel::routes(&self.state))
            .merge(google::routes(&self.state))
            .with_state(self.state.clone())
            .layer(axum::middleware::from_fn(
                move |request: Request, next: Next| with_deadline(deadline, request, next),
            ))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
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
        let app = self.router().into_make_service();
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
                axum_server::from_tcp_rustls(listener, config)
                    .map_err(|e| Error::unavailable(format!("gateway listener: {e}")))?
                    .handle(handle)
                    .serve(app)
                    .await
            }
            None => {
                axum_server::from_tcp(listener)
                    .map_err(|e| Error::unavailable(format!("gateway listener: {e}")))?
                    .handle(handle)
                    .serve(app)
                    .await
            }
        };
        served.map_err(|e| Error::internal(format!("gateway server failed: {e}")))
    }
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
    let gateway = &config.gateway;
    let clients = ServiceClients::connect(
        &gateway.account_url,
        &gateway.provisioning_url,
        &gateway.billing_url,
        &config.tls,
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
