//! A call through the gateway with a `traceparent` continues that trace
//! through the gateway, the services and the database, exported over OTLP to
//! a real collector.

use crate::vercel_support::{VercelOptions, vercel_set};
use fake_opentelemetry_collector::{ExportedSpan, FakeCollectorServer};
use marketbridge_storage::backend_test;
use std::collections::HashMap;
use std::time::Duration;

/// Collects every span the collector receives while `flush` runs (the
/// collector's queue is small, so it is drained while exporting).
pub(crate) async fn flush_and_collect(
    collector: &mut FakeCollectorServer,
    guard: marketbridge_telemetry::TelemetryGuard,
) -> Vec<ExportedSpan> {
    let flushing = tokio::task::spawn_blocking(move || guard.flush());
    let mut spans = Vec::new();
    while !flushing.is_finished() {
        spans.extend(
            collector
                .exported_spans(1, Duration::from_millis(100))
                .await,
        );
    }
    spans.extend(
        collector
            .exported_spans(1, Duration::from_millis(300))
            .await,
    );
    spans
}

/// The collector renders attribute values in their protobuf debug form
/// (`Some(AnyValue { value: Some(StringValue("gateway")) })`); this reads the
/// string or integer inside.
pub(crate) fn attribute(span: &ExportedSpan, key: &str) -> String {
    let raw = span.attributes.get(key).cloned().unwrap_or_default();
    for (start, end) in [("StringValue(\"", "\")"), ("IntValue(", ")")] {
        if let Some(rest) = raw.split(start).nth(1)
            && let Some(value) = rest.split(end).next()
        {
            return value.to_owned();
        }
    }
    raw
}

pub(crate) fn ancestors<'a>(
    span: &'a ExportedSpan,
    by_id: &HashMap<&str, &'a ExportedSpan>,
) -> Vec<&'a ExportedSpan> {
    let mut chain = Vec::new();
    let mut current = span;
    while let Some(parent) = by_id.get(current.parent_span_id.as_str()) {
        chain.push(*parent);
        current = parent;
    }
    chain
}

backend_test!(
    a_traceparent_is_continued_through_gateway_services_and_database,
    |database| async move {
        let mut collector = FakeCollectorServer::start()
            .await
            .expect("collector starts");
        let guard = marketbridge_telemetry::init(
            "marketbridge-trace-test",
            &marketbridge_config::TelemetryOptions {
                otlp_endpoint: collector.endpoint(),
                log_filter: "info,sqlx=warn,h2=warn,hyper=warn,tower=warn,hyper_util=warn"
                    .to_owned(),
                ..Default::default()
            },
        )
        .expect("telemetry starts");
        let vercel = vercel_set(&database, VercelOptions::manual()).await;
        let (installation, admin) = vercel.install().await;

        let trace_id = format!("{:032x}", uuid::Uuid::new_v4().as_u128());
        let caller_span = "00f067aa0ba902b7";
        let answer = vercel
            .partner
            .get("/v1/products/database/plans")
            .user(&admin)
            .header("traceparent", &format!("00-{trace_id}-{caller_span}-01"))
            .send()
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        let _ = installation;

        let spans = flush_and_collect(&mut collector, guard).await;
        let trace: Vec<&ExportedSpan> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
        let names: Vec<(&str, &str)> = trace
            .iter()
            .map(|s| (s.name.as_str(), s.kind.as_str()))
            .collect();
        let by_id: HashMap<&str, &ExportedSpan> =
            trace.iter().map(|s| (s.span_id.as_str(), *s)).collect();

        // The gateway's server span is a child of the caller's span.
        let gateway = trace
            .iter()
            .find(|s| s.name == "GET /vercel/v1/products/{product_slug}/plans")
            .unwrap_or_else(|| panic!("no gateway span in {names:?}"));
        assert_eq!(gateway.kind, "SPAN_KIND_SERVER");
        assert_eq!(gateway.parent_span_id, caller_span);
        assert_eq!(attribute(gateway, "marketbridge.component"), "gateway");
        assert_eq!(attribute(gateway, "http.response.status_code"), "200");

        // Every other span of the trace hangs below the gateway's.
        for span in &trace {
            if span.span_id != gateway.span_id {
                assert!(
                    ancestors(span, &by_id)
                        .iter()
                        .any(|a| a.span_id == gateway.span_id),
                    "{} is not below the gateway span: {names:?}",
                    span.name
                );
            }
        }

        // The account service's server span, with its handler span below (the
        // plans themselves come from the gateway's own catalog, without a call).
        {
            let (server, handler, component) = (
                "marketbridge.account.v1.AccountService/GetAccount",
                "account.get",
                "account",
            );
            let server_span = trace
                .iter()
                .find(|s| s.name == server && s.kind == "SPAN_KIND_SERVER")
                .unwrap_or_else(|| panic!("no {server} server span in {names:?}"));
            assert_eq!(attribute(server_span, "marketbridge.component"), component);
            assert_eq!(
                attribute(server_span, "rpc.caller"),
                "marketbridge",
                "the server span names the authenticated caller"
            );
            let client = by_id
                .get(server_span.parent_span_id.as_str())
                .unwrap_or_else(|| panic!("{server} has no parent in the trace"));
            assert_eq!(
                client.kind, "SPAN_KIND_CLIENT",
                "{server} is called by a client span"
            );
            let handler_span = trace
                .iter()
                .find(|s| s.name == handler)
                .unwrap_or_else(|| panic!("no {handler} span in {names:?}"));
            assert!(
                ancestors(handler_span, &by_id)
                    .iter()
                    .any(|a| a.span_id == server_span.span_id),
                "{handler} runs inside {server}"
            );
        }

        // The database query of the account lookup, below its handler.
        let account_handler = trace.iter().find(|s| s.name == "account.get").unwrap();
        let query = trace
            .iter()
            .find(|s| {
                s.name.starts_with("sea_orm.")
                    && ancestors(s, &by_id)
                        .iter()
                        .any(|a| a.span_id == account_handler.span_id)
            })
            .unwrap_or_else(|| panic!("no database span below account.get in {names:?}"));
        assert_eq!(query.kind, "SPAN_KIND_CLIENT");
        assert!(
            ["sqlite", "postgresql"].contains(&attribute(query, "db.system").as_str()),
            "{:?}",
            query.attributes
        );
        vercel.stop().await;
    }
);
