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

/// The route label of every request no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";
/// The method label of every method outside the standard ones.
pub const OTHER_METHOD: &str = "_OTHER";

/// The method as a label: one of the standard methods, or `_OTHER`, so that
/// made-up methods cannot grow the metrics without bound.
pub fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => OTHER_METHOD,
    }
}

/// axum middleware: opens the request's server span (continuing the caller's
/// `traceparent`), and records its count and latency by route template
/// (every unmatched path is one `unmatched` value) and bounded method. Use it with
/// `axum::middleware::from_fn(marketbridge_telemetry::http_server_layer)`.
pub async fn http_server_layer(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
    let method = method_label(request.method()).to_owned();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_standard_ones_share_one_label() {
        assert_eq!(method_label(&http::Method::PATCH), "PATCH");
        let made_up = http::Method::from_bytes(b"FROB").unwrap();
        assert_eq!(method_label(&made_up), OTHER_METHOD);
    }
}
