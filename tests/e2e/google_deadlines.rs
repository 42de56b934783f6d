//! Google's reporting deadlines (contract §4.1), with the clock driven
//! across each case: a window reported within the hour after it closes
//! (even with a long settle delay); a cancellation that closes the open
//! window at once and refuses later usage; usage across the Pacific month
//! end split at the boundary and reported before the 01:00 PT cutoff; a
//! Service Control outage during which hourly windows are kept, the grace
//! period shows in the metrics, and the windows are replayed in order,
//! each once; and windows Google cannot take for longer than
//! `google.report_grace_days`, given up and counted.

use crate::google_support::{Delivery, GoogleTest, start, start_with};
use crate::keys::scrape;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use marketbridge_core::ErrorCode;
use marketbridge_core::time::{Clock, pacific_month_cutoff, to_timestamp};
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_simulators::google::PRODUCT;
use marketbridge_storage::backend_test;
use serde_json::Value;
use std::collections::BTreeSet;

fn at(text: &str) -> DateTime<Utc> {
    marketbridge_core::time::parse_rfc3339("at", text).expect("a time")
}

fn text(time: DateTime<Utc>) -> String {
    marketbridge_core::time::to_rfc3339(time)
}

/// A signed-up customer with an active `pro-plan` entitlement; returns the
/// entitlement id, our subscription id and the usage reporting id.
async fn customer(google: &GoogleTest) -> (String, String, String) {
    let purchase = google.sim.purchase(PRODUCT, "pro-plan");
    google.settle().await;
    google
        .sign_up(
            &purchase.account_id,
            "Ada Lovelace",
            "ada@example.com",
            "Engines",
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

fn usage_event(
    subscription_id: &str,
    id: &str,
    quantity: i64,
    when: &str,
) -> billing_pb::UsageEvent {
    billing_pb::UsageEvent {
        event_id: id.into(),
        customer: Some(billing_pb::usage_event::Customer::SubscriptionId(
            subscription_id.into(),
        )),
        metric_id: "requests".into(),
        quantity,
        occurred_at: Some(to_timestamp(at(when))),
    }
}

async fn try_record(
    google: &GoogleTest,
    subscription_id: &str,
    id: &str,
    quantity: i64,
    when: &str,
) -> Result<(), tonic::Status> {
    let mut billing = google.test.set.clients.billing.clone();
    billing
        .record_usage(billing_pb::RecordUsageRequest {
            events: vec![usage_event(subscription_id, id, quantity, when)],
        })
        .await
        .map(|_| ())
}

async fn record(google: &GoogleTest, subscription_id: &str, id: &str, quantity: i64, when: &str) {
    try_record(google, subscription_id, id, quantity, when)
        .await
        .expect("usage recorded");
}

/// One scheduler run, then every outbox until nothing is due.
async fn bill(google: &GoogleTest) {
    google.test.run_billing().await;
    google.test.drain().await;
}

/// Runs the scheduler every 5 minutes (its default interval) up to `to`.
async fn bill_every_five_minutes_until(google: &GoogleTest, to: DateTime<Utc>) {
    while google.clock.now() + ChronoDuration::minutes(5) <= to {
        google.clock.advance(ChronoDuration::minutes(5));
        bill(google).await;
    }
    clock_to(google, to);
    bill(google).await;
}

/// What Service Control accepted: (arrival, start, end, requests), in
/// arrival order.
fn arrivals(google: &GoogleTest) -> Vec<(DateTime<Utc>, String, String, i64)> {
    google
        .sim
        .reported_operations_at()
        .into_iter()
        .map(|(arrived, op)| {
            (
                arrived,
                op["startTime"].as_str().unwrap().to_owned(),
                op["endTime"].as_str().unwrap().to_owned(),
                requests(&op),
            )
        })
        .collect()
}

fn requests(operation: &Value) -> i64 {
    operation["metricValueSets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|set| {
            set["metricName"]
                .as_str()
                .unwrap()
                .ends_with("pro_requests")
        })
        .flat_map(|set| set["metricValues"].as_array().unwrap().clone())
        .map(|value| {
            value["int64Value"]
                .as_str()
                .unwrap()
                .parse::<i64>()
                .unwrap()
        })
        .sum()
}

async fn ledger(google: &GoogleTest, subscription_id: &str) -> Vec<billing_pb::UsageReport> {
    let mut billing = google.test.set.clients.billing.clone();
    let mut reports = Vec::new();
    let mut page = None;
    loop {
        let answer = billing
            .list_usage_reports(billing_pb::ListUsageReportsRequest {
                subscription_id: subscription_id.into(),
                page: page.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        reports.extend(answer.reports);
        let next = answer.page.map(|p| p.next_page_token).unwrap_or_default();
        if next.is_empty() {
            break;
        }
        page = Some(marketbridge_proto::common::v1::PageRequest {
            page_token: next,
            ..Default::default()
        });
    }
    reports.sort_by_key(|r| r.window_start.map(|t| t.seconds));
    reports
}

fn status(report: &billing_pb::UsageReport) -> billing_pb::ReportStatus {
    billing_pb::ReportStatus::try_from(report.status).unwrap_or_default()
}

/// The value of Google's series of `name` in a scrape.
fn gauge(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find(|line| {
            line.split([' ', '{']).next() == Some(name) && line.contains(r#"marketplace="google""#)
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{name} is exported:\n{scrape}"))
}

const AGE: &str = "marketplace_usage_unreported_age_seconds";
const GRACE_LEFT: &str = "marketplace_usage_grace_remaining_seconds";
const EXPIRED: &str = "marketplace_usage_expired_total";
const DAY: f64 = 86_400.0;

backend_test!(
    a_window_is_reported_within_the_hour_after_it_closes,
    |database| async move {
        // A settle delay of two hours would miss Google's hour: it is capped.
        let google = start_with(&database, Delivery::Push, |config| {
            config.billing.usage_settle_seconds = 7200;
        })
        .await;
        let (_, subscription_id, _) = customer(&google).await;
        clock_to(&google, at("2026-11-23T12:30:00Z"));
        record(&google, &subscription_id, "a", 120, "2026-11-23T12:10:00Z").await;

        bill_every_five_minutes_until(&google, at("2026-11-23T13:10:00Z")).await;
        assert!(arrivals(&google).is_empty(), "the window is settling");
        bill_every_five_minutes_until(&google, at("2026-11-23T13:30:00Z")).await;
        let arrived = arrivals(&google);
        assert_eq!(arrived.len(), 1, "{arrived:?}");
        let (when, start, end, requests) = &arrived[0];
        assert_eq!(
            (start.as_str(), end.as_str(), *requests),
            ("2026-11-23T12:00:00.000Z", "2026-11-23T13:00:00.000Z", 120)
        );
        assert!(
            *when <= at("2026-11-23T13:15:00Z"),
            "reported {} after the window closed",
            *when - at("2026-11-23T13:00:00Z")
        );
        assert!(*when <= at("2026-11-23T14:00:00Z"), "within Google's hour");

        // Hour after hour, each window within the hour of its end.
        for hour in 13..18 {
            clock_to(&google, at(&format!("2026-11-23T{hour}:45:00Z")));
            record(
                &google,
                &subscription_id,
                &format!("h{hour}"),
                hour,
                &format!("2026-11-23T{hour}:40:00Z"),
            )
            .await;
            bill_every_five_minutes_until(&google, at(&format!("2026-11-23T{}:40:00Z", hour + 1)))
                .await;
        }
        let arrived = arrivals(&google);
        assert_eq!(arrived.len(), 6);
        for (when, _, end, _) in &arrived {
            let end = at(end);
            assert!(
                *when >= end && *when - end <= ChronoDuration::minutes(30),
                "a window ending at {} arrived at {}",
                text(end),
                text(*when)
            );
        }
        let total: i64 = arrived.iter().map(|a| a.3).sum();
        assert_eq!(total, 120 + 13 + 14 + 15 + 16 + 17);
        let metrics = scrape(&google.test).await;
        assert_eq!(gauge(&metrics, AGE), 0.0, "nothing waits");
        assert_eq!(
            gauge(&metrics, GRACE_LEFT),
            30.0 * DAY,
            "nothing is blocked"
        );
        google.stop().await;
    }
);

backend_test!(
    a_cancellation_closes_the_open_window_and_reports_it_at_once,
    |database| async move {
        let google = start(&database, Delivery::Push).await;
        let (entitlement_id, subscription_id, _) = customer(&google).await;
        clock_to(&google, at("2026-11-23T13:30:00Z"));
        record(&google, &subscription_id, "a", 11, "2026-11-23T12:10:00Z").await;
        record(&google, &subscription_id, "b", 13, "2026-11-23T13:20:00Z").await;

        // Cancelled at 13:40, mid-window. No scheduler run: the
        // notification alone makes the final report go out.
        clock_to(&google, at("2026-11-23T13:40:00Z"));
        google
            .sim
            .cancel_immediately(&entitlement_id, "user-cancelled")
            .unwrap();
        google.settle().await;
        let arrived = arrivals(&google);
        assert_eq!(
            arrived
                .iter()
                .map(|(when, start, end, requests)| (
                    text(*when),
                    start.clone(),
                    end.clone(),
                    *requests
                ))
                .collect::<Vec<_>>(),
            [
                (
                    "2026-11-23T13:40:00.000Z",
                    "2026-11-23T12:00:00.000Z",
                    "2026-11-23T13:00:00.000Z",
                    11
                ),
                (
                    "2026-11-23T13:40:00.000Z",
                    "2026-11-23T13:00:00.000Z",
                    "2026-11-23T13:40:00.000Z",
                    13
                ),
            ]
            .map(|(a, b, c, d)| (a.to_owned(), b.to_owned(), c.to_owned(), d)),
            "the open window ends at the cancellation and is reported at once"
        );

        // Usage after the cancellation is refused, clearly; so is usage
        // before it, now that the final report is out.
        clock_to(&google, at("2026-11-23T13:50:00Z"));
        for (id, when) in [
            ("late", "2026-11-23T13:45:00Z"),
            ("edge", "2026-11-23T13:40:00Z"),
        ] {
            let refused = try_record(&google, &subscription_id, id, 1, when)
                .await
                .unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
            let refused = marketbridge_core::Error::from(refused);
            assert_eq!(refused.code(), ErrorCode::Validation);
            assert!(
                refused.fields()[0]
                    .message
                    .contains("no billable subscription"),
                "{refused:?}"
            );
        }
        let refused = try_record(
            &google,
            &subscription_id,
            "before",
            1,
            "2026-11-23T13:35:00Z",
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        let refused = marketbridge_core::Error::from(refused);
        assert!(
            refused.fields()[0].message.contains("already reported"),
            "{refused:?}"
        );

        // Nothing more, ever.
        clock_to(&google, at("2026-11-23T17:00:00Z"));
        bill(&google).await;
        assert_eq!(arrivals(&google).len(), 2);
        let ledger = ledger(&google, &subscription_id).await;
        assert_eq!(ledger.len(), 2);
        assert!(
            ledger
                .iter()
                .all(|r| status(r) == billing_pb::ReportStatus::Sent)
        );
        google.assert_google_refused_nothing();
        google.stop().await;
    }
);

backend_test!(
    usage_across_the_pacific_month_end_is_split_there_and_reported_before_the_cutoff,
    |database| async move {
        let google = start(&database, Delivery::Pull).await;
        // Bought on November 30th at 20:30 UTC (12:30 PST).
        clock_to(&google, at("2026-11-30T20:30:00Z"));
        let (_, subscription_id, _) = customer(&google).await;
        // November ends in Pacific time at 08:00 UTC on December 1st.
        let month_end = at("2026-12-01T08:00:00Z");
        let cutoff = pacific_month_cutoff(at("2026-11-30T23:00:00Z"));
        assert_eq!(cutoff, at("2026-12-01T09:00:00Z"), "01:00 PST");
        clock_to(&google, at("2026-12-01T06:00:00Z"));
        record(
            &google,
            &subscription_id,
            "nov-1",
            5,
            "2026-11-30T21:00:00Z",
        )
        .await;
        record(
            &google,
            &subscription_id,
            "nov-2",
            20,
            "2026-12-01T05:59:00Z",
        )
        .await;
        bill(&google).await;
        clock_to(&google, at("2026-12-01T07:50:00Z"));
        record(
            &google,
            &subscription_id,
            "nov-3",
            7,
            "2026-12-01T07:45:00Z",
        )
        .await;
        bill_every_five_minutes_until(&google, at("2026-12-01T08:20:00Z")).await;
        record(
            &google,
            &subscription_id,
            "dec-1",
            30,
            "2026-12-01T08:15:00Z",
        )
        .await;
        bill_every_five_minutes_until(&google, at("2026-12-01T09:30:00Z")).await;

        let arrived = arrivals(&google);
        let windows: Vec<(DateTime<Utc>, DateTime<Utc>)> =
            arrived.iter().map(|(_, s, e, _)| (at(s), at(e))).collect();
        assert_eq!(windows[0].0, at("2026-11-30T20:30:00Z"));
        for pair in windows.windows(2) {
            assert_eq!(pair[0].1, pair[1].0, "windows are contiguous");
        }
        for (start, end) in &windows {
            assert!(*end - *start <= ChronoDuration::hours(1));
            assert!(
                !(*start < month_end && month_end < *end),
                "{start} to {end} straddles the Pacific month end"
            );
        }
        let november: Vec<_> = arrived
            .iter()
            .filter(|(_, _, end, _)| at(end) <= month_end)
            .collect();
        let december: Vec<_> = arrived
            .iter()
            .filter(|(_, start, _, _)| at(start) >= month_end)
            .collect();
        assert_eq!(november.len() + december.len(), arrived.len());
        assert_eq!(november.last().unwrap().2, text(month_end));
        assert_eq!(november.iter().map(|a| a.3).sum::<i64>(), 5 + 20 + 7);
        assert_eq!(december.iter().map(|a| a.3).sum::<i64>(), 30);
        for (when, _, end, _) in &november {
            assert!(
                *when <= cutoff - ChronoDuration::minutes(30),
                "November's window ending {end} arrived at {}, too close to the cutoff",
                text(*when)
            );
        }
        let (last_november_arrival, ..) = november.last().unwrap();
        assert!(*last_november_arrival <= month_end + ChronoDuration::minutes(10));
        google.stop().await;
    }
);

backend_test!(
    an_outage_keeps_hourly_windows_and_replays_them_in_order_once,
    |database| async move {
        let google = start(&database, Delivery::Push).await;
        let (_, subscription_id, _) = customer(&google).await;
        clock_to(&google, at("2026-11-23T12:50:00Z"));
        record(&google, &subscription_id, "h12", 12, "2026-11-23T12:10:00Z").await;
        google.sim.set_service_control_outage(true);

        for hour in 13..=16 {
            clock_to(&google, at(&format!("2026-11-23T{hour}:05:00Z")));
            bill(&google).await;
            clock_to(&google, at(&format!("2026-11-23T{hour}:20:00Z")));
            record(
                &google,
                &subscription_id,
                &format!("h{hour}"),
                hour,
                &format!("2026-11-23T{hour}:10:00Z"),
            )
            .await;
        }
        assert!(arrivals(&google).is_empty(), "Service Control is down");
        // Each hour is its own window in the ledger, waiting.
        let waiting = ledger(&google, &subscription_id).await;
        assert_eq!(
            waiting
                .iter()
                .map(|r| (
                    r.window_start.unwrap().seconds,
                    r.window_end.unwrap().seconds
                ))
                .collect::<Vec<_>>(),
            (12..16)
                .map(|h| (
                    at(&format!("2026-11-23T{h}:00:00Z")).timestamp(),
                    at(&format!("2026-11-23T{}:00:00Z", h + 1)).timestamp()
                ))
                .collect::<Vec<_>>()
        );
        assert!(
            waiting
                .iter()
                .all(|r| status(r) == billing_pb::ReportStatus::Pending)
        );
        // Only the oldest window was tried; the others wait behind it.
        assert!(waiting[0].attempts >= 4, "{:?}", waiting[0].attempts);
        assert!(waiting[1..].iter().all(|r| r.attempts == 0));
        let tried: BTreeSet<String> = google
            .sim
            .api()
            .recorder
            .calls()
            .into_iter()
            .filter(|c| c.path.ends_with(":check") || c.path.ends_with(":report"))
            .map(|c| {
                let body = c.json();
                body["operation"]["operationId"]
                    .as_str()
                    .or(body["operations"][0]["operationId"].as_str())
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(tried.len(), 1, "{tried:?}");

        // The operator sees the grace period running.
        // As of the last scheduler run (16:05), the oldest window ended
        // 3 h 05 min before and has 30 days from its end.
        let metrics = scrape(&google.test).await;
        let behind = (at("2026-11-23T16:05:00Z") - at("2026-11-23T13:00:00Z")).num_seconds() as f64;
        assert_eq!(gauge(&metrics, AGE), behind);
        assert_eq!(gauge(&metrics, GRACE_LEFT), 30.0 * DAY - behind);

        // Service Control is back: the windows go out in order, each once.
        google.sim.set_service_control_outage(false);
        clock_to(&google, at("2026-11-23T16:25:00Z"));
        bill(&google).await;
        let arrived = arrivals(&google);
        assert_eq!(
            arrived
                .iter()
                .map(|(_, start, end, requests)| (start.clone(), end.clone(), *requests))
                .collect::<Vec<_>>(),
            (12..16)
                .map(|h| (
                    format!("2026-11-23T{h}:00:00.000Z"),
                    format!("2026-11-23T{}:00:00.000Z", h + 1),
                    h as i64
                ))
                .collect::<Vec<_>>(),
            "replayed in window order"
        );
        let ids: BTreeSet<String> = google
            .sim
            .reported_operations()
            .iter()
            .map(|op| op["operationId"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), 4, "each window once");
        let after = ledger(&google, &subscription_id).await;
        assert!(
            after
                .iter()
                .all(|r| status(r) == billing_pb::ReportStatus::Sent)
        );

        // The next hour goes out as usual, and nothing is left behind.
        clock_to(&google, at("2026-11-23T17:05:00Z"));
        bill(&google).await;
        assert_eq!(arrivals(&google).len(), 5);
        assert_eq!(arrivals(&google)[4].3, 16);
        clock_to(&google, at("2026-11-23T17:06:00Z"));
        bill(&google).await;
        let metrics = scrape(&google.test).await;
        assert_eq!(gauge(&metrics, AGE), 0.0);
        assert_eq!(gauge(&metrics, GRACE_LEFT), 30.0 * DAY);
        google.stop().await;
    }
);

backend_test!(
    a_window_google_cannot_take_within_the_grace_period_is_given_up,
    |database| async move {
        let google = start_with(&database, Delivery::Push, |config| {
            config.google.report_grace_days = 1;
        })
        .await;
        let (_, subscription_id, consumer) = customer(&google).await;
        clock_to(&google, at("2026-11-23T12:30:00Z"));
        record(&google, &subscription_id, "a", 40, "2026-11-23T12:10:00Z").await;
        // Billing is disabled for the customer: Google's check refuses.
        google
            .sim
            .set_check_errors(&consumer, &["BILLING_DISABLED"]);
        clock_to(&google, at("2026-11-23T13:05:00Z"));
        bill(&google).await;
        let held = ledger(&google, &subscription_id).await;
        assert_eq!(status(&held[0]), billing_pb::ReportStatus::Suspended);

        // Hours pass; the windows keep being recorded, one per hour.
        clock_to(&google, at("2026-11-23T23:05:00Z"));
        bill(&google).await;
        record(&google, &subscription_id, "b", 2, "2026-11-23T23:04:00Z").await;
        let metrics = scrape(&google.test).await;
        assert_eq!(
            gauge(&metrics, GRACE_LEFT),
            (at("2026-11-24T13:00:00Z") - at("2026-11-23T23:05:00Z")).num_seconds() as f64,
            "a day from the end of the oldest held window"
        );
        assert!(!metrics.contains(EXPIRED), "nothing given up yet");

        // An hour before its grace period ends (an error is logged hourly
        // from a fifth of it on).
        clock_to(&google, at("2026-11-24T12:00:00Z"));
        bill(&google).await;
        let metrics = scrape(&google.test).await;
        assert_eq!(gauge(&metrics, GRACE_LEFT), 3600.0);
        assert!(!metrics.contains(EXPIRED), "nothing given up yet");

        // A day after its end the first window is given up.
        clock_to(&google, at("2026-11-24T13:05:00Z"));
        bill(&google).await;
        let after = ledger(&google, &subscription_id).await;
        assert_eq!(after.len(), 25, "one window per hour, none merged");
        assert_eq!(status(&after[0]), billing_pb::ReportStatus::Failed);
        assert!(
            after[0].response.contains("grace period"),
            "{}",
            after[0].response
        );
        assert!(
            after[0].response.contains("BILLING_DISABLED"),
            "{}",
            after[0].response
        );
        assert_eq!(
            status(&after[1]),
            billing_pb::ReportStatus::Suspended,
            "the next one is tried"
        );
        assert!(
            after[2..]
                .iter()
                .all(|r| status(r) == billing_pb::ReportStatus::Pending)
        );
        let metrics = scrape(&google.test).await;
        assert_eq!(gauge(&metrics, EXPIRED), 1.0);

        // Billing is back: what is left goes out, in order, each once; the
        // given-up window never does.
        google.sim.set_check_errors(&consumer, &[]);
        clock_to(&google, at("2026-11-24T13:10:00Z"));
        bill(&google).await;
        let arrived = arrivals(&google);
        assert_eq!(arrived.len(), 24);
        assert_eq!(arrived[0].1, "2026-11-23T13:00:00.000Z");
        for pair in arrived.windows(2) {
            assert_eq!(pair[0].2, pair[1].1, "in order");
        }
        assert_eq!(arrived.iter().map(|a| a.3).sum::<i64>(), 2);
        let ledger = ledger(&google, &subscription_id).await;
        assert_eq!(
            ledger
                .iter()
                .filter(|r| status(r) == billing_pb::ReportStatus::Failed)
                .count(),
            1
        );
        assert_eq!(
            ledger
                .iter()
                .filter(|r| status(r) == billing_pb::ReportStatus::Sent)
                .count(),
            24
        );
        google.stop().await;
    }
);
