//! A partner call whose services run in the gateway's process is traced as
//! it is over gRPC: gateway span → client span → the service's server span
//! (naming the authenticated caller) → its handler → the database, exported
//! over OTLP to a real collector.

use crate::vercel_support::{VercelOptions, provision_body, vercel_set};
use crate::vercel_trace::{ancestors, attribute, flush_and_collect};
use fake_opentelemetry_collector::{ExportedSpan, FakeCollectorServer};
use marketbridge_storage::backend_test;
use serde_json::json;
use std::collections::HashMap;

backend_test!(
    an_in_process_call_is_traced_gateway_to_service,
    |database| async move {
        let mut collector = FakeCollectorServer::start()
            .await
            .expect("collector starts");
        let guard = marketbridge_telemetry::init(
            "marketbridge-perf-hops-trace",
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
        let provisioned = vercel
            .provision(
                &installation,
                &admin,
                provision_body("database", "pro", "traced", json!({"region": "fra1"})),
            )
            .await;
        let resource_id = provisioned["id"].as_str().expect("an id").to_owned();

        // The account and the resource were read while provisioning: empty
        // the read caches, so each hop of the traced read reaches its
        // database.
        marketbridge_storage::changes::bump_all();
        let trace_id = format!("{:032x}", uuid::Uuid::new_v4().as_u128());
        let caller_span = "00f067aa0ba902b7";
        let answer = vercel
            .partner
            .get(&format!(
                "/v1/installations/{}/resources/{resource_id}",
                installation.id
            ))
            .user(&admin)
            .header("traceparent", &format!("00-{trace_id}-{caller_span}-01"))
            .send()
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);

        let spans = flush_and_collect(&mut collector, guard).await;
        let trace: Vec<&ExportedSpan> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
        let names: Vec<(&str, &str)> = trace
            .iter()
            .map(|s| (s.name.as_str(), s.kind.as_str()))
            .collect();
        let by_id: HashMap<&str, &ExportedSpan> =
            trace.iter().map(|s| (s.span_id.as_str(), *s)).collect();
        let gateway = trace
            .iter()
            .find(|s| {
                s.name == "GET /vercel/v1/installations/{installation_id}/resources/{resource_id}"
            })
            .unwrap_or_else(|| panic!("no gateway span in {names:?}"));
        assert_eq!(gateway.kind, "SPAN_KIND_SERVER");
        assert_eq!(gateway.parent_span_id, caller_span);
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
        // The installation's account (not cached yet: the install forgot
        // it) and the resource, each a client span → server span → handler.
        for (server, handler, component) in [
            (
                "marketbridge.account.v1.AccountService/GetAccount",
                "account.get",
                "account",
            ),
            (
                "marketbridge.provisioning.v1.ProvisioningService/GetResource",
                "provisioning.get_resource",
                "provisioning",
            ),
        ] {
            let server_span = trace
                .iter()
                .find(|s| s.name == server && s.kind == "SPAN_KIND_SERVER")
                .unwrap_or_else(|| panic!("no {server} server span in {names:?}"));
            assert_eq!(attribute(server_span, "marketbridge.component"), component);
            assert_eq!(attribute(server_span, "rpc.caller"), "marketbridge");
            let client = by_id
                .get(server_span.parent_span_id.as_str())
                .unwrap_or_else(|| panic!("{server} has no parent in the trace"));
            assert_eq!(
                client.kind, "SPAN_KIND_CLIENT",
                "{server} is called by a client span"
            );
            assert_eq!(client.name, server);
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
            assert!(
                trace.iter().any(|s| s.name.starts_with("sea_orm.")
                    && ancestors(s, &by_id)
                        .iter()
                        .any(|a| a.span_id == handler_span.span_id)),
                "no database span below {handler} in {names:?}"
            );
        }
        vercel.stop().await;
    }
);
