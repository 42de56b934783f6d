//! Serving a gRPC service the marketbridge way.

use crate::auth::{AuthLayer, Callers};
use crate::tls::service_server_tls;
use marketbridge_config::{Config, TlsOptions};
use marketbridge_core::{Error, Result};
use marketbridge_telemetry::{GrpcServerMetricsLayer, grpc_server_span};
use std::convert::Infallible;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tower::Service;

/// How a service server is secured: TLS (mTLS with a client CA) and the
/// callers it accepts.
#[derive(Debug, Clone)]
pub struct ServerSecurity {
    /// TLS settings (`service_cert`, `service_key`, `service_client_ca`).
    pub tls: TlsOptions,
    /// Who may call.
    pub callers: Callers,
}

impl ServerSecurity {
    /// From `tls.*` and `security.*`; fails when no caller could ever be
    /// accepted.
    pub fn from_config(config: &Config) -> Result<Self> {
        Ok(Self {
            tls: config.tls.clone(),
            callers: Callers::from_config(config)?,
        })
    }
}

/// Serves `service` on `listener` with gRPC health (SERVING until shutdown),
/// reflection over every marketbridge proto, caller authentication
/// ([`crate::auth`]), server spans that continue the caller's trace, call
/// metrics, and TLS or mTLS when configured. Returns once `shutdown` fires
/// and in-flight calls finish.
pub async fn serve_grpc<S>(
    listener: TcpListener,
    component: &'static str,
    security: &ServerSecurity,
    service: S,
    shutdown: CancellationToken,
) -> Result<()>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<S>().await;
    health_reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    // Both reflection versions, so old and new grpcurl releases work.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(marketbridge_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // Advertise only what this server serves, not every service in the protos.
            .with_service_name(S::NAME)
            .with_service_name("grpc.health.v1.Health")
    };
    let reflection = reflection_builder()
        .build_v1()
        .map_err(|e| Error::internal(format!("reflection: {e}")))?;
    let reflection_alpha = reflection_builder()
        .build_v1alpha()
        .map_err(|e| Error::internal(format!("reflection: {e}")))?;

    let mut builder = Server::builder();
    if let Some(tls_config) = service_server_tls(&security.tls)? {
        builder = builder
            .tls_config(tls_config)
            .map_err(|e| Error::validation(format!("service TLS: {e}")))?;
    }
    let router = builder
        .trace_fn(grpc_server_span(component))
        .layer(GrpcServerMetricsLayer)
        .layer(AuthLayer::new(security.callers.clone()))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(service);

    let reporter = health_reporter.clone();
    let stopping = shutdown.clone();
    let signal = async move {
        stopping.cancelled().await;
        reporter.set_not_serving::<S>().await;
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
    };
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    router
        .serve_with_incoming_shutdown(incoming, signal)
        .await
        .map_err(|e| Error::internal(format!("{component} gRPC server failed: {e}")))
}

/// Turns a domain result into a gRPC reply, logging refusals at info and
/// failures at error.
pub fn reply<T>(result: Result<T>) -> std::result::Result<tonic::Response<T>, tonic::Status> {
    result.map(tonic::Response::new).map_err(|error| {
        if error.code() == marketbridge_core::ErrorCode::Internal {
            tracing::error!(error = %error.chain(), "request failed");
        } else {
            tracing::info!(error = %error.chain(), "request refused");
        }
        tonic::Status::from(error)
    })
}
