//! Log lines that carry the trace and span ids of the span they were written
//! in, as text or as one JSON object per line.

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use std::fmt;
use std::sync::{Arc, OnceLock};
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events with `trace_id`/`span_id`.
pub(crate) struct TraceIdFormat {
    json: bool,
    text: Format<Full>,
    dispatch: DispatchCell,
}

/// The subscriber the formatter runs in, set once it is installed. While an
/// event is being dispatched the current dispatcher is not reachable through
/// `tracing::Span::current()`, so the formatter asks this one directly.
#[derive(Clone, Default)]
pub(crate) struct DispatchCell(Arc<OnceLock<WeakDispatch>>);

impl DispatchCell {
    /// Remembers this thread's default dispatcher (call it right after
    /// installing the subscriber).
    pub(crate) fn capture(&self) {
        tracing::dispatcher::get_default(|dispatch| {
            let _ = self.0.set(dispatch.downgrade());
        });
    }
}

impl TraceIdFormat {
    pub(crate) fn new(json: bool, dispatch: DispatchCell) -> Self {
        Self {
            json,
            text: Format::default(),
            dispatch,
        }
    }

    /// Trace and span id of the span the event was written in.
    fn ids<S, N>(&self, ctx: &FmtContext<'_, S, N>) -> Option<(String, String)>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        let span = ctx.lookup_current()?;
        let dispatch = self.dispatch.0.get()?.upgrade()?;
        let context = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
        let otel_span = context.span();
        let span_context = otel_span.span_context();
        span_context.is_valid().then(|| {
            (
                span_context.trace_id().to_string(),
                span_context.span_id().to_string(),
            )
        })
    }
}

impl<S, N> FormatEvent<S, N> for TraceIdFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let ids = self.ids(ctx);
        if !self.json {
            if let Some((trace_id, span_id)) = &ids {
                write!(writer, "trace_id={trace_id} span_id={span_id} ")?;
            }
            return self.text.format_event(ctx, writer, event);
        }
        let mut fields = JsonVisitor(Map::new());
        event.record(&mut fields);
        let metadata = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::String(chrono::Utc::now().to_rfc3339()),
        );
        line.insert("level".into(), Value::String(metadata.level().to_string()));
        line.insert("target".into(), Value::String(metadata.target().to_owned()));
        if let Some(span) = ctx.lookup_current() {
            line.insert("span".into(), Value::String(span.name().to_owned()));
        }
        if let Some((trace_id, span_id)) = ids {
            line.insert("trace_id".into(), Value::String(trace_id));
            line.insert("span_id".into(), Value::String(span_id));
        }
        line.insert("fields".into(), Value::Object(fields.0));
        writeln!(writer, "{}", Value::Object(line))
    }
}

struct JsonVisitor(Map<String, Value>);

impl Visit for JsonVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture(json: bool) -> (String, String) {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let dispatch = DispatchCell::default();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(TraceIdFormat::new(json, dispatch.clone()))
                    .with_writer(move || writer.clone()),
            );
        let trace_id = tracing::subscriber::with_default(subscriber, || {
            dispatch.capture();
            let span = tracing::info_span!("work");
            let _entered = span.enter();
            tracing::info!(account.id = "acc_1", attempts = 3_u64, "job done");
            tracing::Span::current()
                .context()
                .span()
                .span_context()
                .trace_id()
                .to_string()
        });
        let output = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        (output, trace_id)
    }

    #[test]
    fn json_lines_carry_the_trace_and_the_fields() {
        let (output, trace_id) = capture(true);
        let line: Value = serde_json::from_str(output.trim()).expect("one JSON object per line");
        assert_eq!(line["trace_id"], trace_id);
        assert_eq!(line["span"], "work");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["fields"]["message"], "job done");
        assert_eq!(line["fields"]["account.id"], "acc_1");
        assert_eq!(line["fields"]["attempts"], 3);
        assert_eq!(trace_id.len(), 32);
    }

    #[test]
    fn text_lines_start_with_the_trace() {
        let (output, trace_id) = capture(false);
        assert!(
            output.starts_with(&format!("trace_id={trace_id} span_id=")),
            "{output}"
        );
        assert!(output.contains("job done"));
    }
}
