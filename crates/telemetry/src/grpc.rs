//! gRPC spans and metrics: the server span (continuing the caller's trace from
//! the request metadata), server-side call metrics, and a client layer that
//! opens a client span and injects its context into every outgoing call.

use crate::metrics::metrics;
use crate::propagation::extract_http;
use futures::future::BoxFuture;
use opentelemetry::KeyValue;
use opentelemetry::global;
use opentelemetry_http::HeaderInjector;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Splits `/package.Service/Method` into service and method.
fn split_path(path: &str) -> (String, String) {
    let trimmed = path.trim_start_matches('/');
    match trimmed.rsplit_once('/') {
        Some((service, method)) => (service.to_owned(), method.to_owned()),
        None => (trimmed.to_owned(), String::new()),
    }
}

/// The client span of a call to `service`/`method`.
fn client_span(service: &str, method: &str) -> tracing::Span {
    tracing::info_span!(
        "grpc.client",
        otel.name = %format_args!("{service}/{method}"),
        otel.kind = "client",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
    )
}

/// The server span of a call to `service`/`method` served by `component`,
/// below `parent` (a local span; `None` keeps the current one).
fn server_span(
    component: &'static str,
    service: &str,
    method: &str,
    parent: Option<&tracing::Span>,
) -> tracing::Span {
    match parent {
        Some(parent) => tracing::info_span!(
            parent: parent,
            "grpc.server",
            otel.name = %format_args!("{service}/{method}"),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            marketbridge.component = component,
            rpc.caller = tracing::field::Empty,
        ),
        None => tracing::info_span!(
            "grpc.server",
            otel.name = %format_args!("{service}/{method}"),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            marketbridge.component = component,
            rpc.caller = tracing::field::Empty,
        ),
    }
}

/// A method of a service called in this process (no network hop), traced
/// and measured exactly as the same call over gRPC: a client span, a server
/// span below it naming the component, and the client and server metrics.
#[derive(Debug, Clone)]
pub struct InProcessCall {
    component: &'static str,
    service: &'static str,
    method: String,
    /// `method` as a metric attribute, shared rather than copied per call.
    method_value: opentelemetry::StringValue,
    path: String,
}

impl InProcessCall {
    /// The call of `method` (its Rust name, `get_account`) of `service`
    /// (`marketbridge.account.v1.AccountService`), served by `component`.
    pub fn new(component: &'static str, service: &'static str, rust_method: &str) -> Self {
        let method: String = rust_method
            .split('_')
            .filter(|part| !part.is_empty())
            .map(|part| {
                let mut chars = part.chars();
                chars.next().map_or_else(String::new, |first| {
                    first.to_ascii_uppercase().to_string() + chars.as_str()
                })
            })
            .collect();
        let path = format!("/{service}/{method}");
        Self {
            component,
            service,
            method_value: opentelemetry::StringValue::from(std::sync::Arc::<str>::from(
                method.as_str(),
            )),
            method,
            path,
        }
    }

    /// `/package.Service/Method`, as the call's gRPC path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The client span, below the current span.
    pub fn client_span(&self) -> tracing::Span {
        client_span(self.service, &self.method)
    }

    /// The server span, below `client`, naming `caller` as the
    /// authenticated caller.
    pub fn server_span(&self, client: &tracing::Span, caller: &str) -> tracing::Span {
        let span = server_span(self.component, self.service, &self.method, Some(client));
        span.record("rpc.caller", caller);
        span
    }

    /// Records the call's metrics: it answered `code` (the gRPC status
    /// code) `elapsed` after it started.
    pub fn record(&self, code: i64, elapsed: std::time::Duration) {
        let seconds = elapsed.as_secs_f64();
        let attributes = [
            KeyValue::new("rpc.service", self.service),
            KeyValue::new("rpc.method", self.method_value.clone()),
            KeyValue::new("rpc.grpc.status_code", code),
        ];
        let meters = metrics();
        meters.rpc_server_requests.add(1, &attributes);
        meters.rpc_server_duration.record(seconds, &attributes);
        meters.rpc_client_duration.record(seconds, &attributes);
    }
}

/// Builds the server span of a gRPC call; pass it to tonic's
/// `Server::builder().trace_fn(...)`. `component` names the service.
pub fn grpc_server_span(
    component: &'static str,
) -> impl Fn(&http::Request<()>) -> tracing::Span + Clone {
    move |request: &http::Request<()>| {
        let (service, method) = split_path(request.uri().path());
        let span = server_span(component, &service, &method, None);
        let _ = span.set_parent(extract_http(request.headers()));
        span
    }
}

/// The service and method label of every call to a path no service
/// serves.
pub const OTHER_RPC: &str = "_OTHER";
/// `UNIMPLEMENTED`: what the server answers for a path it has no route for.
const UNIMPLEMENTED: i64 = 12;
/// `UNAUTHENTICATED`: what the server answers a caller without credentials,
/// whatever the path.
const UNAUTHENTICATED: i64 = 16;

/// The labels of a served call: its service and method, except for calls
/// answered `UNIMPLEMENTED` (a path no service serves) or `UNAUTHENTICATED`
/// (refused before any route), whose paths a caller can make up: those all
/// share `_OTHER`, so the metrics stay bounded.
fn bounded_labels(service: String, method: String, code: i64) -> (String, String) {
    if code == UNIMPLEMENTED || code == UNAUTHENTICATED {
        (OTHER_RPC.to_owned(), OTHER_RPC.to_owned())
    } else {
        (service, method)
    }
}

fn grpc_status_of<B>(response: &http::Response<B>) -> i64 {
    response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// Tower layer recording gRPC server call counts and latency.
#[derive(Debug, Clone, Default)]
pub struct GrpcServerMetricsLayer;

impl<S> Layer<S> for GrpcServerMetricsLayer {
    type Service = GrpcServerMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerMetricsService { inner }
    }
}

/// See [`GrpcServerMetricsLayer`].
#[derive(Debug, Clone)]
pub struct GrpcServerMetricsService<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GrpcServerMetricsService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let (service, method) = split_path(request.uri().path());
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            let code = match &result {
                Ok(response) => grpc_status_of(response),
                Err(_) => 14,
            };
            let (service, method) = bounded_labels(service, method, code);
            let attributes = [
                KeyValue::new("rpc.service", service),
                KeyValue::new("rpc.method", method),
                KeyValue::new("rpc.grpc.status_code", code),
            ];
            let meters = metrics();
            meters.rpc_server_requests.add(1, &attributes);
            meters
                .rpc_server_duration
                .record(started.elapsed().as_secs_f64(), &attributes);
            result
        })
    }
}

/// Tower layer for gRPC channels: a client span per call, its trace context
/// injected into the call's metadata, and client-side latency.
#[derive(Debug, Clone, Default)]
pub struct GrpcClientLayer;

impl<S> Layer<S> for GrpcClientLayer {
    type Service = GrpcClientService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcClientService { inner }
    }
}

/// See [`GrpcClientLayer`].
#[derive(Debug, Clone)]
pub struct GrpcClientService<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GrpcClientService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let (service, method) = split_path(request.uri().path());
        let span = client_span(&service, &method);
        let context = span.context();
        global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut HeaderInjector(request.headers_mut()))
        });
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(
            async move {
                let result = future.await;
                let code = match &result {
                    Ok(response) => grpc_status_of(response),
                    Err(_) => 14,
                };
                metrics().rpc_client_duration.record(
                    started.elapsed().as_secs_f64(),
                    &[
                        KeyValue::new("rpc.service", service),
                        KeyValue::new("rpc.method", method),
                        KeyValue::new("rpc.grpc.status_code", code),
                    ],
                );
                result
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/marketbridge.account.v1.AccountService/GetAccount"),
            (
                "marketbridge.account.v1.AccountService".to_owned(),
                "GetAccount".to_owned()
            )
        );
        assert_eq!(
            InProcessCall::new(
                "account",
                "marketbridge.account.v1.AccountService",
                "who_am_i"
            )
            .path(),
            "/marketbridge.account.v1.AccountService/WhoAmI"
        );
        assert_eq!(split_path("/odd"), ("odd".to_owned(), String::new()));
        assert_eq!(
            bounded_labels("made.Up".into(), "Frob".into(), UNIMPLEMENTED),
            (OTHER_RPC.to_owned(), OTHER_RPC.to_owned())
        );
        assert_eq!(
            bounded_labels("a.B".into(), "C".into(), 0),
            ("a.B".to_owned(), "C".to_owned())
        );
    }
}
