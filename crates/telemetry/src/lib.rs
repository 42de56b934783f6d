//! Tracing, OpenTelemetry and metrics for every marketbridge process.
//!
//! Architecture invariant: this is the only crate that configures
//! subscribers, exporters and propagators. Everything else creates spans with
//! `tracing` and calls the helpers here to carry the W3C trace context across
//! HTTP, gRPC, outbound calls and the outbox.

mod grpc;
mod http_server;
mod logfmt;
mod metrics;
mod propagation;
pub mod transactions;

pub use grpc::{
    GrpcClientLayer, GrpcClientService, GrpcServerMetricsLayer, GrpcServerMetricsService,
    InProcessCall, grpc_server_span,
};
pub use http_server::http_server_layer;
pub use metrics::{Metrics, metrics, render_prometheus};
pub use propagation::{
    context_from_traceparent, current_traceparent, extract_http, inject_current_context,
    outbound_http_span, record_http_status,
};

use marketbridge_config::TelemetryOptions;
use opentelemetry::global;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use std::sync::OnceLock;
use std::time::Duration;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
#[error("telemetry setup failed: {0}")]
pub struct TelemetryError(String);

/// Keeps exporters alive; flushes them when shut down or dropped.
#[derive(Debug, Clone)]
pub struct TelemetryGuard {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
}

impl TelemetryGuard {
    /// Sends every buffered span and metric now.
    pub fn flush(&self) {
        let _ = self.tracer_provider.force_flush();
        let _ = self.meter_provider.force_flush();
    }

    /// Flushes and stops the exporters.
    pub fn shutdown(&self) {
        self.flush();
        let _ = self.tracer_provider.shutdown();
        let _ = self.meter_provider.shutdown();
    }
}

static GUARD: OnceLock<TelemetryGuard> = OnceLock::new();

/// Starts logs, traces and metrics for this process, once. `service_name`
/// becomes the OpenTelemetry `service.name`. A second call returns the first
/// guard, so tests and the all-in-one command can call it freely. Must run
/// inside a Tokio runtime when OTLP export is configured.
pub fn init(
    service_name: &str,
    options: &TelemetryOptions,
) -> Result<TelemetryGuard, TelemetryError> {
    if let Some(guard) = GUARD.get() {
        return Ok(guard.clone());
    }
    global::set_text_map_propagator(TraceContextPropagator::new());
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();

    // Spans are recorded only when they go somewhere: without an exporter
    // (or with a ratio of zero) the OpenTelemetry layer is left out, so a
    // span costs only what `tracing` itself does.
    let exporting = !options.otlp_endpoint.is_empty();
    let ratio = sampling_ratio(options.trace_sampling_ratio);
    let recording = records_spans(options);
    let mut tracer_builder = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_sampler(Sampler::ParentBased(Box::new(if ratio >= 1.0 {
            Sampler::AlwaysOn
        } else {
            Sampler::TraceIdRatioBased(ratio)
        })));
    let mut meter_builder = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(metrics::PrometheusReader::shared());
    if exporting {
        let span_exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint_url(&options.otlp_endpoint)
            .build()
            .map_err(|e| TelemetryError(e.to_string()))?;
        tracer_builder = tracer_builder.with_batch_exporter(span_exporter);
        let metric_exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint_url(&options.otlp_endpoint)
            .build()
            .map_err(|e| TelemetryError(e.to_string()))?;
        let reader = opentelemetry_sdk::metrics::PeriodicReader::builder(metric_exporter)
            .with_interval(Duration::from_millis(
                options.metrics_export_interval_ms.max(100),
            ))
            .build();
        meter_builder = meter_builder.with_reader(reader);
    }
    let tracer_provider = tracer_builder.build();
    let meter_provider = meter_builder.build();
    global::set_tracer_provider(tracer_provider.clone());
    global::set_meter_provider(meter_provider.clone());

    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&options.log_filter));
    let otel_layer = recording.then(|| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer_provider.tracer("marketbridge"))
            .with_tracked_inactivity(false)
    });
    let json = options.log_format.eq_ignore_ascii_case("json");
    let dispatch = logfmt::DispatchCell::default();
    // Colours only for a terminal: a file, a pipe or a container's log
    // gets plain text.
    let fmt_layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .event_format(logfmt::TraceIdFormat::new(json, dispatch.clone()));
    // Another subscriber may already be installed (a test harness); traces
    // and metrics still work through the global providers then.
    if tracing_subscriber::registry()
        .with(filter)
        .with(otel_layer)
        .with(fmt_layer)
        .try_init()
        .is_ok()
    {
        dispatch.capture();
    }

    let guard = TelemetryGuard {
        tracer_provider,
        meter_provider,
    };
    Ok(GUARD.get_or_init(|| guard).clone())
}

/// `telemetry.trace_sampling_ratio` within 0 to 1 (anything else, or not a
/// number, is read as its nearest bound; NaN as 1).
fn sampling_ratio(configured: f64) -> f64 {
    if configured.is_nan() {
        1.0
    } else {
        configured.clamp(0.0, 1.0)
    }
}

/// Whether spans are recorded with `options`: only when they are exported
/// and the sampling ratio lets some through.
pub fn records_spans(options: &TelemetryOptions) -> bool {
    !options.otlp_endpoint.is_empty() && sampling_ratio(options.trace_sampling_ratio) > 0.0
}

/// Extension: set an OTLP endpoint from text.
trait WithEndpointUrl {
    fn with_endpoint_url(self, endpoint: &str) -> Self;
}

impl<T: opentelemetry_otlp::WithExportConfig> WithEndpointUrl for T {
    fn with_endpoint_url(self, endpoint: &str) -> Self {
        self.with_endpoint(endpoint.to_owned())
    }
}

/// Serves Prometheus `/metrics` on `listener` until `shutdown` fires.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route("/metrics", axum::routing::get(metrics_endpoint));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The `/metrics` handler.
pub async fn metrics_endpoint() -> impl axum::response::IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render_prometheus(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_recorded_only_when_exported_and_sampled() {
        let mut options = TelemetryOptions::default();
        assert!(!records_spans(&options), "no endpoint, nothing recorded");
        options.otlp_endpoint = "http://127.0.0.1:4317".into();
        assert!(records_spans(&options));
        options.trace_sampling_ratio = 0.0;
        assert!(!records_spans(&options), "a ratio of zero records nothing");
        options.trace_sampling_ratio = 0.25;
        assert!(records_spans(&options));
        assert_eq!(sampling_ratio(7.0), 1.0);
        assert_eq!(sampling_ratio(-1.0), 0.0);
        assert_eq!(sampling_ratio(f64::NAN), 1.0);
    }
}
