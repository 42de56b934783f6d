//! Request and RPC counts and latency histograms, recorded through
//! OpenTelemetry metrics (exported over OTLP when configured) and rendered in
//! the Prometheus text format for scraping.

use opentelemetry::KeyValue;
use opentelemetry::global;
use opentelemetry::metrics::{Counter, Gauge, Histogram};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, Temporality};
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

/// Latency buckets in seconds, from 1 ms to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The instruments every component records into.
#[derive(Debug)]
pub struct Metrics {
    /// HTTP requests served, by route, method and status.
    pub http_server_requests: Counter<u64>,
    /// HTTP request latency in seconds, by route, method and status.
    pub http_server_duration: Histogram<f64>,
    /// gRPC calls served, by service, method and status code.
    pub rpc_server_requests: Counter<u64>,
    /// gRPC call latency in seconds, by service, method and status code.
    pub rpc_server_duration: Histogram<f64>,
    /// gRPC calls made, by service, method and status code.
    pub rpc_client_duration: Histogram<f64>,
    /// Outbound HTTP call latency in seconds, by peer, route and status.
    pub http_client_duration: Histogram<f64>,
    /// Outbox job outcomes, by job kind and outcome.
    pub outbox_jobs: Counter<u64>,
    /// Token verifications that used signing keys past their cache lifetime
    /// because the key endpoint failed, by key set.
    pub jwks_stale: Counter<u64>,
    /// Failed fetches of a signing-key document, by key set.
    pub jwks_fetch_failures: Counter<u64>,
    /// Age in seconds, since its end, of the oldest usage window a
    /// marketplace with a reporting grace period (Google, Azure) has not
    /// accepted yet (0 when none waits), by marketplace.
    pub usage_unreported_age: Gauge<f64>,
    /// Seconds left of the grace period of the oldest usage window the
    /// marketplace could not take (the whole period when reporting is not
    /// blocked), by marketplace.
    pub usage_grace_remaining: Gauge<f64>,
    /// Usage windows given up after the grace period, by marketplace.
    pub usage_expired: Counter<u64>,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();
static READER: OnceLock<Arc<ManualReader>> = OnceLock::new();

/// The process's instruments. Created on first use from the global meter
/// provider, so [`crate::init`] must run first for them to export.
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(|| {
        let meter = global::meter("marketbridge");
        Metrics {
            http_server_requests: meter
                .u64_counter("http.server.requests")
                .with_description("HTTP requests served")
                .build(),
            http_server_duration: meter
                .f64_histogram("http.server.request.duration")
                .with_unit("s")
                .with_description("HTTP request latency")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            rpc_server_requests: meter
                .u64_counter("rpc.server.requests")
                .with_description("gRPC calls served")
                .build(),
            rpc_server_duration: meter
                .f64_histogram("rpc.server.duration")
                .with_unit("s")
                .with_description("gRPC call latency, server side")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            rpc_client_duration: meter
                .f64_histogram("rpc.client.duration")
                .with_unit("s")
                .with_description("gRPC call latency, client side")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            http_client_duration: meter
                .f64_histogram("http.client.request.duration")
                .with_unit("s")
                .with_description("Outbound HTTP call latency")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            outbox_jobs: meter
                .u64_counter("outbox.jobs")
                .with_description("Outbox job outcomes")
                .build(),
            jwks_stale: meter
                .u64_counter("jwks.stale")
                .with_description("Token verifications with signing keys past their cache lifetime")
                .build(),
            jwks_fetch_failures: meter
                .u64_counter("jwks.fetch.failures")
                .with_description("Failed fetches of signing keys")
                .build(),
            usage_unreported_age: meter
                .f64_gauge("marketplace.usage.unreported.age")
                .with_unit("s")
                .with_description(
                    "Age of the oldest usage window the marketplace has not accepted yet",
                )
                .build(),
            usage_grace_remaining: meter
                .f64_gauge("marketplace.usage.grace.remaining")
                .with_unit("s")
                .with_description(
                    "Grace period left for the oldest usage window the marketplace could not take",
                )
                .build(),
            usage_expired: meter
                .u64_counter("marketplace.usage.expired")
                .with_description("Usage windows given up after the grace period")
                .build(),
        }
    })
}

impl Metrics {
    /// Records one outbound HTTP call.
    pub fn record_http_client(&self, peer: &str, route: &str, status: u16, elapsed: Duration) {
        self.http_client_duration.record(
            elapsed.as_secs_f64(),
            &[
                KeyValue::new("server.address", peer.to_owned()),
                KeyValue::new("url.template", route.to_owned()),
                KeyValue::new("http.response.status_code", i64::from(status)),
            ],
        );
    }

    /// Records one token verified with stale keys of `key_set`.
    pub fn record_jwks_stale(&self, key_set: &str) {
        self.jwks_stale
            .add(1, &[KeyValue::new("key_set", key_set.to_owned())]);
    }

    /// Records one failed fetch of `key_set`'s keys.
    pub fn record_jwks_fetch_failure(&self, key_set: &str) {
        self.jwks_fetch_failures
            .add(1, &[KeyValue::new("key_set", key_set.to_owned())]);
    }

    /// Records where a marketplace's usage reporting stands: the age of the
    /// oldest unaccepted window and the grace period left, in seconds.
    pub fn record_usage_backlog(
        &self,
        marketplace: &'static str,
        unreported_age: f64,
        grace_remaining: f64,
    ) {
        let labels = [KeyValue::new("marketplace", marketplace)];
        self.usage_unreported_age
            .record(unreported_age.max(0.0), &labels);
        self.usage_grace_remaining
            .record(grace_remaining.max(0.0), &labels);
    }

    /// Records a marketplace's usage windows given up after the grace period.
    pub fn record_usage_expired(&self, marketplace: &'static str, windows: u64) {
        self.usage_expired
            .add(windows, &[KeyValue::new("marketplace", marketplace)]);
    }

    /// Records one outbox job outcome (`delivered`, `retry`, `dead`).
    pub fn record_outbox_job(&self, kind: &str, outcome: &'static str) {
        self.outbox_jobs.add(
            1,
            &[
                KeyValue::new("job.kind", kind.to_owned()),
                KeyValue::new("outcome", outcome),
            ],
        );
    }
}

/// The pull reader behind `/metrics`, shared with the meter provider.
#[derive(Debug, Clone)]
pub(crate) struct PrometheusReader(Arc<ManualReader>);

impl PrometheusReader {
    pub(crate) fn shared() -> Self {
        Self(
            READER
                .get_or_init(|| {
                    Arc::new(
                        ManualReader::builder()
                            .with_temporality(Temporality::Cumulative)
                            .build(),
                    )
                })
                .clone(),
        )
    }
}

impl MetricReader for PrometheusReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }

    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// Everything recorded so far, in the Prometheus text exposition format.
pub fn render_prometheus() -> String {
    let mut out = String::new();
    let Some(reader) = READER.get() else {
        return out;
    };
    let mut collected = ResourceMetrics::default();
    if reader.collect(&mut collected).is_err() {
        return out;
    }
    for scope in collected.scope_metrics() {
        for metric in scope.metrics() {
            let base = prometheus_name(metric.name(), metric.unit());
            let help = metric.description().replace('\n', " ");
            match metric.data() {
                AggregatedMetrics::U64(data) => render(&mut out, &base, &help, data, |v| *v as f64),
                AggregatedMetrics::I64(data) => render(&mut out, &base, &help, data, |v| *v as f64),
                AggregatedMetrics::F64(data) => render(&mut out, &base, &help, data, |v| *v),
            }
        }
    }
    out
}

fn render<T: Copy>(
    out: &mut String,
    base: &str,
    help: &str,
    data: &MetricData<T>,
    as_f64: impl Fn(&T) -> f64,
) {
    match data {
        MetricData::Sum(sum) => {
            let (name, kind) = if sum.is_monotonic() {
                (format!("{base}_total"), "counter")
            } else {
                (base.to_owned(), "gauge")
            };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for point in sum.data_points() {
                let labels = labels(point.attributes(), None);
                let _ = writeln!(out, "{name}{labels} {}", as_f64(&point.value()));
            }
        }
        MetricData::Gauge(gauge) => {
            let _ = writeln!(out, "# HELP {base} {help}\n# TYPE {base} gauge");
            for point in gauge.data_points() {
                let labels = labels(point.attributes(), None);
                let _ = writeln!(out, "{base}{labels} {}", as_f64(&point.value()));
            }
        }
        MetricData::Histogram(histogram) => {
            let _ = writeln!(out, "# HELP {base} {help}\n# TYPE {base} histogram");
            for point in histogram.data_points() {
                let mut cumulative = 0_u64;
                for (bound, count) in point.bounds().zip(point.bucket_counts()) {
                    cumulative += count;
                    let labels = labels(point.attributes(), Some(&bound.to_string()));
                    let _ = writeln!(out, "{base}_bucket{labels} {cumulative}");
                }
                let labels_inf = labels(point.attributes(), Some("+Inf"));
                let _ = writeln!(out, "{base}_bucket{labels_inf} {}", point.count());
                let plain = labels(point.attributes(), None);
                let _ = writeln!(out, "{base}_sum{plain} {}", as_f64(&point.sum()));
                let _ = writeln!(out, "{base}_count{plain} {}", point.count());
            }
        }
        MetricData::ExponentialHistogram(_) => {}
    }
}

fn prometheus_name(name: &str, unit: &str) -> String {
    let mut base: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    match unit {
        "s" => base.push_str("_seconds"),
        "ms" => base.push_str("_milliseconds"),
        "By" => base.push_str("_bytes"),
        _ => {}
    }
    base
}

fn labels<'a>(attributes: impl Iterator<Item = &'a KeyValue>, le: Option<&str>) -> String {
    let mut parts: Vec<String> = attributes
        .map(|kv| {
            let key: String = kv
                .key
                .as_str()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            let value = kv
                .value
                .as_str()
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{key}=\"{value}\"")
        })
        .collect();
    parts.sort();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        assert_eq!(
            prometheus_name("http.server.request.duration", "s"),
            "http_server_request_duration_seconds"
        );
        assert_eq!(prometheus_name("outbox.jobs", ""), "outbox_jobs");
        let attributes = [
            KeyValue::new("http.route", "/v1/a\"b"),
            KeyValue::new("a", 1),
        ];
        assert_eq!(
            labels(attributes.iter(), Some("0.5")),
            "{a=\"1\",http_route=\"/v1/a\\\"b\",le=\"0.5\"}"
        );
    }
}
