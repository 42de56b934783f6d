//! Carrying the W3C trace context across process boundaries: HTTP headers in
//! and out, and a `traceparent` string stored with outbox jobs.

use opentelemetry::Context;
use opentelemetry::global;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The trace context of incoming HTTP (or gRPC) headers.
pub fn extract_http(headers: &http::HeaderMap) -> Context {
    global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)))
}

/// Writes the current span's context into outgoing headers.
pub fn inject_current_context(headers: &mut http::HeaderMap) {
    let context = tracing::Span::current().context();
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(headers))
    });
}

/// The current span's context as a `traceparent` value, to store with work
/// that runs later. `None` when there is no sampled trace.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    global::get_text_map_propagator(|propagator| propagator.inject_context(&context, &mut carrier));
    carrier.remove("traceparent")
}

/// Rebuilds a remote context from a stored `traceparent`, to parent the span
/// of work that runs later.
pub fn context_from_traceparent(traceparent: &str) -> Context {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    global::get_text_map_propagator(|propagator| propagator.extract(&carrier))
}

/// A client span for an outbound HTTP call. Enter it (or instrument the call
/// with it) and call [`inject_current_context`] on the request headers.
pub fn outbound_http_span(peer: &str, method: &str, route: &str) -> tracing::Span {
    tracing::info_span!(
        "http.client",
        otel.name = %format!("{method} {route}"),
        otel.kind = "client",
        http.request.method = %method,
        server.address = %peer,
        url.template = %route,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// Records the answer of an outbound call on its span.
pub fn record_http_status(span: &tracing::Span, status: u16) {
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips() {
        global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let context = context_from_traceparent(traceparent);
        let span_context = context.span().span_context().clone();
        assert_eq!(
            span_context.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert!(span_context.is_remote());
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", traceparent.parse().unwrap());
        let extracted = extract_http(&headers);
        assert_eq!(
            extracted.span().span_context().span_id().to_string(),
            "b7ad6b7169203331"
        );
    }
}
