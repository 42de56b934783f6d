//! Billing reaching Google Cloud Marketplace: usage of each active
//! entitlement as Service Control operations, checked then reported, over
//! contiguous windows that end at hours and at plan changes, with the metric
//! names of the plan in force, a final report at cancellation, check errors
//! that hold reporting back, report errors that fail, retries after 429s and
//! 5xx, and a restart. The simulator records what Google received; the
//! totals it holds are checked against the usage recorded.

use crate::google_support::{Delivery, GoogleTest, start};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use marketbridge_core::ErrorCode;
use marketbridge_core::time::{Clock, to_timestamp};
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_simulators::common::Fault;
use marketbridge_simulators::google::{GoogleSimulator, PRODUCT};
use marketbridge_storage::backend_test;
use serde_json::Value;
use std::collections::BTreeMap;

const METRICS: &str = "database.endpoints.marketbridge-demo.cloud.goog/";

fn at(text: &str) -> DateTime<Utc> {
    marketbridge_core::time::parse_rfc3339("at", text).expect("a time")
}

/// A signed-up customer with an active entitlement on `plan`; returns the
/// entitlement id, our subscription id and the usage reporting id.
async fn customer(google: &GoogleTest, plan: &str) -> (String, String, String) {
    let purchase = google.sim.purchase(PRODUCT, plan);
    google.settle().await;
    google
        .sign_up(
            &purchase.account_id,
            "Grace Hopper",
            "grace@example.com",
            "Compilers",
        )
        .await;
    google.settle().await;
    let subscription = google
        .subscription(&purchase.entitlement_id)
        .await
        .expect("the entitlement is recorded");
    assert!(!subscription.usage_reporting_id.is_empty());
    (
        purchase.entitlement_id,
        subscription.id,
        subscription.usage_reporting_id,
    )
}

fn clock_to(google: &GoogleTest, to: DateTime<Utc>) {
    let now = google.clock.now();
    assert!(to >= now, "time only moves forward");
    google.clock.advance(to - now);
}

async fn record(google: &GoogleTest, subscription_id: &str, events: &[(&str, &str, i64, &str)]) {
    crate::support::record_usage(&google.test.set, subscription_id, events).await;
}

async fn bill(google: &GoogleTest) {
    google.test.run_billing().await;
    google.test.drain().await;
}

/// Reported operations, one per operation id (Google bills an id once);
/// a repeated id must carry the same operation.
fn billed(sim: &GoogleSimulator) -> Vec<Value> {
    let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
    for operation in sim.reported_operations() {
        let id = operation["operationId"].as_str().unwrap().to_owned();
        if let Some(earlier) = by_id.get(&id) {
            assert_eq!(
                earlier, &operation,
                "a repeated operation id is the same operation"
            );
        }
        by_id.insert(id, operation);
    }
    let mut operations: Vec<Value> = by_id.into_values().collect();
    operations.sort_by_key(|op| op["startTime"].as_str().unwrap().to_owned());
    operations
}

/// Total billed per metric name.
fn totals(operations: &[Value]) -> BTreeMap<String, i64> {
    let mut totals = BTreeMap::new();
    for operation in operations {
        for set in operation["metricValueSets"].as_array().unwrap() {
            let name = set["metricName"]
                .as_str()
                .unwrap()
                .trim_start_matches(METRICS);
            for value in set["metricValues"].as_array().unwrap() {
                let text = value["int64Value"]
                    .as_str()
                    .expect("int64 values are strings");
                *totals.entry(name.to_owned()).or_default() += text.parse::<i64>().unwrap();
            }
        }
    }
    totals
}

/// The windows of the operations, asserting they are contiguous.
fn windows(operations: &[Value]) -> Vec<(String, String)> {
    let windows: Vec<(String, String)> = operations
        .iter()
        .map(|op| {
            (
                op["startTime"].as_str().unwrap().to_owned(),
                op["endTime"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for pair in windows.windows(2) {
        assert_eq!(pair[0].1, pair[1].0, "windows are contiguous: {windows:?}");
    }
    windows
}

async fn reports(google: &GoogleTest, subscription_id: &str) -> Vec<billing_pb::UsageReport> {
    let mut billing = google.test.set.clients.billing.clone();
    let mut reports = billing
        .list_usage_reports(billing_pb::ListUsageReportsRequest {
            subscription_id: subscription_id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .reports;
    reports.reverse();
    reports
}

backend_test!(
    usage_reaches_google_in_contiguous_windows_across_plan_changes_and_retries,
    |database| async move {
        let google = start(&database, Delivery::Push).await;
        let (entitlement_id, subscription_id, consumer) = customer(&google, "pro-plan").await;
        let started = google.clock.now();
        assert_eq!(started, at("2026-11-23T12:00:00Z"));

        clock_to(&google, at("2026-11-23T12:35:00Z"));
        let first = [
            ("a", "requests", 100, "2026-11-23T12:10:00Z"),
            ("b", "storage_gb", 3, "2026-11-23T12:20:00Z"),
            ("c", "requests", 250, "2026-11-23T12:30:00Z"),
        ];
        record(&google, &subscription_id, &first).await;
        record(&google, &subscription_id, &first).await;

        clock_to(&google, at("2026-11-23T13:04:00Z"));
        bill(&google).await;
        assert!(
            google.sim.checked_operations().is_empty(),
            "the hour has not settled"
        );
        clock_to(&google, at("2026-11-23T13:06:00Z"));
        bill(&google).await;
        let operations = billed(&google.sim);
        assert_eq!(operations.len(), 1);
        let operation = &operations[0];
        assert_eq!(operation["consumerId"], consumer.as_str());
        assert_eq!(operation["operationName"], "Hourly Usage Report");
        assert_eq!(
            operation["operationId"],
            marketbridge_billing::domain::operation_id(
                &marketbridge_core::ids::SubscriptionId::parse("subscriptionId", &subscription_id)
                    .unwrap(),
                at("2026-11-23T12:00:00Z"),
                at("2026-11-23T13:00:00Z")
            )
            .as_str(),
            "the operation id comes from the ledger key"
        );
        assert_eq!(
            totals(&operations),
            BTreeMap::from([
                ("pro_requests".to_owned(), 350),
                ("pro_storage_gb".to_owned(), 3)
            ])
        );
        let checks = google.sim.checked_operations();
        assert_eq!(checks.len(), 1, "checked before reported");
        assert_eq!(checks[0]["operationId"], operation["operationId"]);

        // A 429 on the check and a 503 on the report: retried with the same
        // operation.
        clock_to(&google, at("2026-11-23T13:11:00Z"));
        record(
            &google,
            &subscription_id,
            &[
                ("d", "requests", 1000, "2026-11-23T13:10:00Z"),
                ("g", "storage_gb", 5, "2026-11-23T13:10:00Z"),
            ],
        )
        .await;
        google
            .sim
            .api()
            .faults
            .inject(Fault::status(":check", 429, 1));
        google
            .sim
            .api()
            .faults
            .inject(Fault::status(":report", 503, 1));
        clock_to(&google, at("2026-11-23T14:06:00Z"));
        bill(&google).await;
        for _ in 0..3 {
            google.clock.advance(ChronoDuration::seconds(2));
            google.test.drain().await;
        }
        assert_eq!(billed(&google.sim).len(), 2);
        let refused = google
            .sim
            .api()
            .recorder
            .calls()
            .into_iter()
            .filter(|c| c.status == 429 || c.status == 503)
            .count();
        assert_eq!(refused, 2);

        // The plan changes at 14:30: the window ends there and the next one
        // carries the new plan's metric names.
        clock_to(&google, at("2026-11-23T14:25:00Z"));
        record(
            &google,
            &subscription_id,
            &[("e", "requests", 5, "2026-11-23T14:10:00Z")],
        )
        .await;
        clock_to(&google, at("2026-11-23T14:30:00Z"));
        google
            .sim
            .request_plan_change(&entitlement_id, "free-plan")
            .unwrap();
        google.settle().await;
        assert_eq!(
            google.subscription(&entitlement_id).await.unwrap().plan_id,
            "free"
        );
        clock_to(&google, at("2026-11-23T14:45:00Z"));
        record(
            &google,
            &subscription_id,
            &[("f", "requests", 7, "2026-11-23T14:40:00Z")],
        )
        .await;
        clock_to(&google, at("2026-11-23T15:06:00Z"));
        bill(&google).await;

        let operations = billed(&google.sim);
        assert_eq!(
            windows(&operations),
            [
                ("2026-11-23T12:00:00.000Z", "2026-11-23T13:00:00.000Z"),
                ("2026-11-23T13:00:00.000Z", "2026-11-23T14:00:00.000Z"),
                ("2026-11-23T14:00:00.000Z", "2026-11-23T14:30:00.000Z"),
                ("2026-11-23T14:30:00.000Z", "2026-11-23T15:00:00.000Z"),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        assert_eq!(
            totals(&operations),
            BTreeMap::from([
                ("free_requests".to_owned(), 7),
                ("pro_requests".to_owned(), 100 + 250 + 1000 + 5),
                // Storage is measured, not summed: each window reports the
                // latest measurement at its end (3, then 5 until the change).
                ("pro_storage_gb".to_owned(), 3 + 5 + 5),
            ]),
            "what Google billed is exactly what was recorded, per plan"
        );
        let ledger = reports(&google, &subscription_id).await;
        assert_eq!(ledger.len(), 4);
        assert!(
            ledger
                .iter()
                .all(|r| r.status == billing_pb::ReportStatus::Sent as i32)
        );
        assert_eq!(
            ledger[1].attempts, 3,
            "the 429 and the 503, then the report"
        );
        let body: Value = serde_json::from_str(&ledger[3].request_json).unwrap();
        assert_eq!(
            body["operations"][0], operations[3],
            "the ledger holds what Google received"
        );

        // Usage for reported windows is refused with a clear error.
        let mut billing = google.test.set.clients.billing.clone();
        let refused = billing
            .record_usage(billing_pb::RecordUsageRequest {
                events: vec![billing_pb::UsageEvent {
                    event_id: "late".into(),
                    customer: Some(billing_pb::usage_event::Customer::SubscriptionId(
                        subscription_id.clone(),
                    )),
                    metric_id: "requests".into(),
                    quantity: 1,
                    occurred_at: Some(to_timestamp(at("2026-11-23T14:50:00Z"))),
                }],
            })
            .await
            .unwrap_err();
        let refused = marketbridge_core::Error::from(refused);
        assert_eq!(refused.code(), ErrorCode::Validation);
        assert!(
            refused.fields()[0].message.contains("already reported"),
            "{refused:?}"
        );
        google.stop().await;
    }
);

backend_test!(
    check_errors_hold_reporting_back_and_report_errors_fail,
    |database| async move {
        let google = start(&database, Delivery::Pull).await;
        let (_, subscription_id, consumer) = customer(&google, "pro-plan").await;
        clock_to(&google, at("2026-11-23T12:35:00Z"));
        record(
            &google,
            &subscription_id,
            &[("a", "requests", 40, "2026-11-23T12:10:00Z")],
        )
        .await;

        // Billing is disabled for the customer: the report is held back and
        // shows why.
        google
            .sim
            .set_check_errors(&consumer, &["BILLING_DISABLED"]);
        clock_to(&google, at("2026-11-23T13:06:00Z"));
        bill(&google).await;
        let ledger = reports(&google, &subscription_id).await;
        assert_eq!(ledger.len(), 1);
        assert_eq!(ledger[0].status, billing_pb::ReportStatus::Suspended as i32);
        assert!(
            ledger[0].response.contains("BILLING_DISABLED"),
            "{}",
            ledger[0].response
        );
        assert!(google.sim.reported_operations().is_empty());
        let mut billing = google.test.set.clients.billing.clone();
        let suspended = billing
            .list_usage_reports(billing_pb::ListUsageReportsRequest {
                status: billing_pb::ReportStatus::Suspended as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .reports;
        assert_eq!(suspended.len(), 1, "operators can list what is held back");

        // Still disabled an hour later: checked again; the next window is
        // kept in the ledger and waits behind it, unchecked.
        clock_to(&google, at("2026-11-23T14:06:00Z"));
        bill(&google).await;
        assert_eq!(google.sim.checked_operations().len(), 2);
        let held = reports(&google, &subscription_id).await;
        assert_eq!(held.len(), 2);
        assert_eq!(held[1].status, billing_pb::ReportStatus::Pending as i32);
        assert_eq!(held[1].attempts, 0);

        // Billing is back: the held report goes out, then the windows that
        // waited behind it.
        google.sim.set_check_errors(&consumer, &[]);
        clock_to(&google, at("2026-11-23T14:07:00Z"));
        record(
            &google,
            &subscription_id,
            &[("b", "requests", 2, "2026-11-23T14:05:00Z")],
        )
        .await;
        clock_to(&google, at("2026-11-23T15:06:00Z"));
        bill(&google).await;
        bill(&google).await;
        let operations = billed(&google.sim);
        assert_eq!(windows(&operations).len(), 3);
        assert_eq!(totals(&operations)["pro_requests"], 42);

        // A report error Google calls permanent fails the report for good.
        google
            .sim
            .set_report_error(&consumer, Some((3, "Metric value out of range.")));
        clock_to(&google, at("2026-11-23T16:06:00Z"));
        bill(&google).await;
        let ledger = reports(&google, &subscription_id).await;
        let failed = ledger.last().unwrap();
        assert_eq!(failed.status, billing_pb::ReportStatus::Failed as i32);
        assert!(
            failed.response.contains("out of range"),
            "{}",
            failed.response
        );

        // A transient one is retried until it passes.
        google
            .sim
            .set_report_error(&consumer, Some((14, "Try again later.")));
        clock_to(&google, at("2026-11-23T17:06:00Z"));
        bill(&google).await;
        let pending = reports(&google, &subscription_id).await;
        assert_eq!(
            pending.last().unwrap().status,
            billing_pb::ReportStatus::Pending as i32
        );
        google.sim.set_report_error(&consumer, None);
        google.clock.advance(ChronoDuration::seconds(2));
        google.test.drain().await;
        let ledger = reports(&google, &subscription_id).await;
        assert_eq!(
            ledger.last().unwrap().status,
            billing_pb::ReportStatus::Sent as i32
        );
        assert_eq!(billed(&google.sim).len(), 4);
        google.stop().await;
    }
);

backend_test!(
    cancellation_sends_a_final_report_that_survives_a_restart,
    |database| async move {
        let google = start(&database, Delivery::Push).await;
        let (entitlement_id, subscription_id, _) = customer(&google, "pro-plan").await;
        clock_to(&google, at("2026-11-23T13:20:00Z"));
        record(
            &google,
            &subscription_id,
            &[
                ("a", "requests", 11, "2026-11-23T12:10:00Z"),
                ("b", "requests", 13, "2026-11-23T13:10:00Z"),
            ],
        )
        .await;

        // Cancelled at 13:40: the last window ends there and goes out at
        // once, while Service Control fails.
        clock_to(&google, at("2026-11-23T13:40:00Z"));
        google
            .sim
            .api()
            .faults
            .inject(Fault::status(":check", 500, 4));
        google
            .sim
            .cancel_immediately(&entitlement_id, "user-cancelled")
            .unwrap();
        google.settle().await;
        let mut billing = google.test.set.clients.billing.clone();
        let after = billing
            .record_usage(billing_pb::RecordUsageRequest {
                events: vec![billing_pb::UsageEvent {
                    event_id: "after".into(),
                    customer: Some(billing_pb::usage_event::Customer::SubscriptionId(
                        subscription_id.clone(),
                    )),
                    metric_id: "requests".into(),
                    quantity: 1,
                    occurred_at: Some(to_timestamp(at("2026-11-23T13:40:00Z"))),
                }],
            })
            .await
            .unwrap_err();
        assert_eq!(
            after.code(),
            tonic::Code::InvalidArgument,
            "nothing is billable after it"
        );

        // The process stops with the reports queued and a new one delivers
        // them.
        clock_to(&google, at("2026-11-23T13:46:00Z"));
        bill(&google).await;
        assert!(billed(&google.sim).is_empty());
        let GoogleTest {
            test, sim, clock, ..
        } = google;
        let test = test.restart().await;
        sim.api().faults.clear();
        clock.advance(ChronoDuration::seconds(2));
        test.drain().await;
        let operations = billed(&sim);
        assert_eq!(
            windows(&operations),
            [
                ("2026-11-23T12:00:00.000Z", "2026-11-23T13:00:00.000Z"),
                ("2026-11-23T13:00:00.000Z", "2026-11-23T13:40:00.000Z"),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned())),
            "the final report ends at the cancellation"
        );
        assert_eq!(totals(&operations)["pro_requests"], 24);
        assert_eq!(sim.reported_operations().len(), 2, "each delivered once");

        clock.advance(ChronoDuration::hours(3));
        test.run_billing().await;
        test.drain().await;
        assert_eq!(billed(&sim).len(), 2, "nothing after the final report");
        test.stop().await;
    }
);

backend_test!(
    a_report_whose_answer_was_lost_is_resent_as_the_same_operation_after_a_restart,
    |database| async move {
        let google = start(&database, Delivery::Push).await;
        let (_, subscription_id, _) = customer(&google, "pro-plan").await;
        clock_to(&google, at("2026-11-23T12:40:00Z"));
        record(
            &google,
            &subscription_id,
            &[("a", "requests", 17, "2026-11-23T12:10:00Z")],
        )
        .await;
        // Google records the report, but its answer never arrives; the
        // process stops before it learns the outcome.
        google
            .sim
            .api()
            .faults
            .inject(Fault::answer_lost(":report", 502, 1));
        clock_to(&google, at("2026-11-23T13:06:00Z"));
        bill(&google).await;
        assert_eq!(google.sim.reported_operations().len(), 1);
        let ledger = reports(&google, &subscription_id).await;
        assert_eq!(ledger[0].status, billing_pb::ReportStatus::Pending as i32);

        let GoogleTest {
            test, sim, clock, ..
        } = google;
        let test = test.restart().await;
        clock.advance(ChronoDuration::seconds(2));
        test.drain().await;
        let received = sim.reported_operations();
        assert_eq!(received.len(), 2, "sent again after the restart");
        assert_eq!(
            received[0], received[1],
            "the same operation id and values: Google bills it once"
        );
        let operations = billed(&sim);
        assert_eq!(operations.len(), 1);
        assert_eq!(totals(&operations)["pro_requests"], 17);
        let mut billing = test.set.clients.billing.clone();
        let ledger = billing
            .list_usage_reports(billing_pb::ListUsageReportsRequest {
                subscription_id: subscription_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .reports;
        assert_eq!(
            (ledger[0].status, ledger[0].attempts),
            (billing_pb::ReportStatus::Sent as i32, 2)
        );
        test.stop().await;
    }
);
