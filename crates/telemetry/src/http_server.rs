//! The server span and metrics of every HTTP request the gateway serves.

use crate::metrics::metrics;
use crate::propagation::extract_http;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::KeyValue;
use std::time::Instant;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// axum middleware: opens the request's server span (continuing the caller's
/// `traceparent`), and records its count and latency by route. Use it with
/// `axum::middleware::from_fn(marketbridge_telemetry::http_server_layer)`.
pub async fn http_server_layer(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let span = tracing::info_span!(
        "http.server",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        marketbridge.component = "gateway",
    );
    let _ = span.set_parent(extract_http(request.headers()));
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    let attributes = [
        KeyValue::new("http.route", route),
        KeyValue::new("http.request.method", method),
        KeyValue::new("http.response.status_code", i64::from(status)),
    ];
    let meters = metrics();
    meters.http_server_requests.add(1, &attributes);
    meters
        .http_server_duration
        .record(started.elapsed().as_secs_f64(), &attributes);
    response
}
