//! Billing reaching Vercel: hourly interim billing and usage, one invoice
//! per resource, period and plan at period end, invoice states followed,
//! prepaid balances drawn down by usage, and final invoices then
//! finalization at uninstall. The simulator records what Vercel received;
//! every total it holds is checked against the usage recorded.

use crate::support::TestSet;
use crate::vercel_support::{
    VercelOptions, VercelTest, installation_path, provision_body, vercel_set,
};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use marketbridge_core::ErrorCode;
use marketbridge_core::time::to_timestamp;
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_simulators::common::Fault;
use marketbridge_simulators::vercel::InstallationHandle;
use marketbridge_storage::backend_test;
use serde_json::{Value, json};

fn at(text: &str) -> DateTime<Utc> {
    marketbridge_core::time::parse_rfc3339("at", text).expect("a time")
}

pub(crate) fn usage(
    event_id: &str,
    resource_id: &str,
    metric: &str,
    quantity: i64,
    at: DateTime<Utc>,
) -> billing_pb::UsageEvent {
    billing_pb::UsageEvent {
        event_id: event_id.into(),
        customer: Some(billing_pb::usage_event::Customer::ResourceId(
            resource_id.into(),
        )),
        metric_id: metric.into(),
        quantity,
        occurred_at: Some(to_timestamp(at)),
    }
}

pub(crate) async fn record(
    test: &TestSet,
    events: Vec<billing_pb::UsageEvent>,
) -> billing_pb::RecordUsageResponse {
    let mut billing = test.set.clients.billing.clone();
    billing
        .record_usage(billing_pb::RecordUsageRequest { events })
        .await
        .expect("usage recorded")
        .into_inner()
}

/// Moves the manual clock to `to`.
pub(crate) fn clock_to(test: &TestSet, to: DateTime<Utc>) {
    let now = test.now();
    assert!(to >= now, "time only moves forward");
    test.advance(to - now);
}

/// Runs the due billing work and delivers it.
pub(crate) async fn bill(test: &TestSet) {
    test.run_billing().await;
    test.drain().await;
}

/// Installs, provisions a `database` resource on `plan` and lets billing
/// learn of it.
async fn customer(vercel: &VercelTest, plan: &str) -> (InstallationHandle, String, String) {
    let (installation, admin) = vercel.install().await;
    let resource = vercel
        .provision(
            &installation,
            &admin,
            provision_body("database", plan, "metered", json!({"region": "iad1"})),
        )
        .await;
    vercel.drain().await;
    let resource_id = resource["id"].as_str().expect("an id").to_owned();
    (installation, admin, resource_id)
}

/// The usage line of a metric, per resource (`Some`) or account-wide.
pub(crate) fn usage_line<'a>(data: &'a Value, resource_id: Option<&str>, name: &str) -> &'a Value {
    data["usage"]
        .as_array()
        .expect("usage lines")
        .iter()
        .find(|line| {
            line["name"] == name && line.get("resourceId").and_then(Value::as_str) == resource_id
        })
        .unwrap_or_else(|| panic!("no {name} line for {resource_id:?} in {data}"))
}

fn cents(text: &Value) -> i64 {
    let text = text.as_str().expect("a decimal string");
    let (whole, fraction) = text.split_once('.').expect("two decimals");
    assert_eq!(fraction.len(), 2, "{text}");
    whole.parse::<i64>().unwrap() * 100 + fraction.parse::<i64>().unwrap()
}

backend_test!(
    usage_reaches_vercel_hourly_and_is_invoiced_at_period_end,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::manual()).await;
        let test = &vercel.test;
        assert_eq!(test.now(), at("2026-11-23T12:00:00Z"));
        let (installation, _, resource_id) = customer(&vercel, "pro").await;

        // Usage across hour windows; a replayed event counts once.
        let first = vec![
            usage(
                "r1",
                &resource_id,
                "requests",
                400_000,
                at("2026-11-23T12:10:00Z"),
            ),
            usage(
                "s1",
                &resource_id,
                "storage_gb",
                120,
                at("2026-11-23T12:30:00Z"),
            ),
            usage(
                "r2",
                &resource_id,
                "requests",
                300_000,
                at("2026-11-23T12:50:00Z"),
            ),
        ];
        clock_to(test, at("2026-11-23T12:55:00Z"));
        assert_eq!(record(test, first.clone()).await.accepted, 3);
        assert_eq!(record(test, first).await.duplicates, 3);

        // Nothing is due before the hour has ended and settled.
        clock_to(test, at("2026-11-23T13:04:00Z"));
        bill(test).await;
        assert!(
            vercel
                .sim
                .installation(&installation.id)
                .unwrap()
                .billing_data
                .is_empty()
        );
        clock_to(test, at("2026-11-23T13:06:00Z"));
        bill(test).await;
        let sent = vercel
            .sim
            .installation(&installation.id)
            .unwrap()
            .billing_data;
        assert_eq!(sent.len(), 1, "one submission per settled hour");
        let data = &sent[0];
        assert_eq!(data["period"]["start"], "2026-11-01T00:00:00.000Z");
        assert_eq!(data["period"]["end"], "2026-12-01T00:00:00.000Z");
        assert_eq!(data["eod"], "2026-11-24T00:00:00.000Z");
        let requests = usage_line(data, Some(&resource_id), "Requests");
        assert_eq!(requests["type"], "interval");
        assert_eq!(requests["periodValue"], 700_000.0, "only the settled hour");
        assert_eq!(requests["dayValue"], 700_000.0);
        assert_eq!(requests["planValue"], 1_000_000.0);
        let storage = usage_line(data, None, "Storage");
        assert_eq!(
            storage["periodValue"], 120.0,
            "account-wide rows sum the resources"
        );
        let items = data["billing"]["items"].as_array().unwrap();
        let base = items
            .iter()
            .find(|i| i["name"] == "Pro")
            .expect("the plan's price");
        assert_eq!(base["billingPlanId"], "pro");
        assert_eq!(base["resourceId"], resource_id.as_str());
        assert_eq!(base["total"], "5.00", "20.00 prorated over 7.5 of 30 days");
        let over = items
            .iter()
            .find(|i| i["name"] == "Storage")
            .expect("storage beyond 100 GB");
        assert_eq!(
            (
                over["quantity"].clone(),
                over["price"].clone(),
                over["total"].clone()
            ),
            (json!(20.0), json!("0.25"), json!("5.00"))
        );

        clock_to(test, at("2026-11-23T13:21:00Z"));
        record(
            test,
            vec![
                usage(
                    "r3",
                    &resource_id,
                    "requests",
                    500_000,
                    at("2026-11-23T13:20:00Z"),
                ),
                // Storage is measured: the latest measurement is what counts.
                usage(
                    "s2",
                    &resource_id,
                    "storage_gb",
                    110,
                    at("2026-11-23T13:20:00Z"),
                ),
            ],
        )
        .await;

        // Vercel is down for the next hour's submission: it is retried with
        // the same body, once.
        vercel
            .sim
            .faults()
            .inject(Fault::status("/billing", 503, 1).method("POST"));
        clock_to(test, at("2026-11-23T14:06:00Z"));
        bill(test).await;
        test.advance(ChronoDuration::seconds(2));
        test.drain().await;
        let calls = vercel.sim.recorder().calls_to(
            "POST",
            &format!("/v1/installations/{}/billing", installation.id),
        );
        let hourly: Vec<_> = calls
            .iter()
            .filter(|c| c.path.ends_with("/billing"))
            .collect();
        assert_eq!(hourly.len(), 3, "one refused attempt, then the retry");
        assert_eq!(hourly[1].status, 503);
        assert_eq!(
            hourly[1].body, hourly[2].body,
            "the retry carries the same body"
        );
        let sent = vercel
            .sim
            .installation(&installation.id)
            .unwrap()
            .billing_data;
        assert_eq!(
            usage_line(&sent[1], Some(&resource_id), "Requests")["periodValue"],
            1_200_000.0
        );
        let storage = usage_line(&sent[1], Some(&resource_id), "Storage");
        assert_eq!(storage["type"], "total");
        assert_eq!(
            (storage["dayValue"].clone(), storage["periodValue"].clone()),
            (json!(110.0), json!(110.0)),
            "a measurement is the current total, not a sum"
        );

        // Late usage for the period, then the period ends.
        clock_to(test, at("2026-11-30T23:30:00Z"));
        record(
            test,
            vec![usage(
                "r4",
                &resource_id,
                "requests",
                50_000,
                at("2026-11-30T23:10:00Z"),
            )],
        )
        .await;
        clock_to(test, at("2026-12-01T00:04:00Z"));
        record(
            test,
            vec![usage(
                "d1",
                &resource_id,
                "requests",
                7,
                at("2026-12-01T00:01:00Z"),
            )],
        )
        .await;
        clock_to(test, at("2026-12-01T00:06:00Z"));
        bill(test).await;
        let state = vercel.sim.installation(&installation.id).unwrap();
        let last_of_november = state.billing_data.last().unwrap();
        assert_eq!(
            last_of_november["period"]["start"],
            "2026-11-01T00:00:00.000Z"
        );
        assert_eq!(
            usage_line(last_of_november, Some(&resource_id), "Requests")["periodValue"],
            1_250_000.0,
            "the period's final totals equal everything recorded in it"
        );
        assert_eq!(
            state.invoices.len(),
            1,
            "one invoice per resource, period and plan"
        );
        let invoice = state.invoices.values().next().unwrap();
        assert_eq!(
            invoice.external_id.as_deref(),
            Some(format!("{resource_id}:pro:2026-11").as_str())
        );
        let submission = &invoice.submission;
        assert_eq!(submission["period"]["start"], "2026-11-01T00:00:00.000Z");
        assert!(submission.get("final").is_none());
        let lines = submission["items"].as_array().unwrap();
        let line = |name: &str| {
            lines
                .iter()
                .find(|l| l["name"] == name)
                .unwrap_or_else(|| panic!("no {name} line"))
        };
        assert_eq!(
            line("Requests")["quantity"],
            250_000.0,
            "1,250,000 used, 1,000,000 included"
        );
        assert_eq!(line("Requests")["total"], "2.50");
        assert_eq!(
            line("Storage")["quantity"],
            10.0,
            "110 GB in use, 100 included"
        );
        assert_eq!(line("Storage")["total"], "2.50");
        assert_eq!(line("Pro")["total"], "5.00");
        assert_eq!(invoice.total, "10.00");
        let total: i64 = lines.iter().map(|l| cents(&l["total"])).sum();
        assert_eq!(total, 1000);

        // Billing keeps the invoice with Vercel's id; running again sends
        // nothing twice.
        let mut billing = test.set.clients.billing.clone();
        let account = vercel.account(&installation).await;
        let ours = billing
            .list_invoices(billing_pb::ListInvoicesRequest {
                account_id: account.id.clone(),
                page: None,
            })
            .await
            .unwrap()
            .into_inner()
            .invoices;
        assert_eq!(ours.len(), 1);
        assert_eq!(ours[0].marketplace_invoice_id, invoice.id);
        assert_eq!(ours[0].total.as_ref().unwrap().amount_minor, 1000);
        assert_eq!(ours[0].state, billing_pb::InvoiceState::Pending as i32);
        bill(test).await;
        assert_eq!(
            vercel
                .sim
                .installation(&installation.id)
                .unwrap()
                .invoices
                .len(),
            1
        );

        // Usage for the invoiced period is refused now, clearly.
        let refused = billing
            .record_usage(billing_pb::RecordUsageRequest {
                events: vec![usage(
                    "r5",
                    &resource_id,
                    "requests",
                    1,
                    at("2026-11-30T23:59:00Z"),
                )],
            })
            .await
            .unwrap_err();
        let refused = marketbridge_core::Error::from(refused);
        assert_eq!(refused.code(), ErrorCode::Validation);
        assert_eq!(refused.fields()[0].field, "events[0].occurredAt");

        // The invoice's state is followed by reading it from Vercel.
        vercel
            .sim
            .set_invoice_state(&installation.id, &invoice.id, "paid");
        clock_to(test, at("2026-12-01T01:06:00Z"));
        bill(test).await;
        let read = billing
            .get_invoice(billing_pb::GetInvoiceRequest {
                selector: Some(billing_pb::get_invoice_request::Selector::InvoiceId(
                    ours[0].id.clone(),
                )),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(read.state, billing_pb::InvoiceState::Paid as i32);
        assert!(read.paid_at.is_some());

        // December started with its own usage only.
        let december = vercel
            .sim
            .installation(&installation.id)
            .unwrap()
            .billing_data;
        let december = december.last().unwrap();
        assert_eq!(december["period"]["start"], "2026-12-01T00:00:00.000Z");
        assert_eq!(
            usage_line(december, Some(&resource_id), "Requests")["periodValue"],
            7.0
        );

        // The ledger shows every submission with what was sent.
        let reports = billing
            .list_usage_reports(billing_pb::ListUsageReportsRequest {
                account_id: account.id.clone(),
                kind: "invoice".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .reports;
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].status, billing_pb::ReportStatus::Sent as i32);
        assert_eq!(reports[0].invoice_id, ours[0].id);
        let sent_body: Value = serde_json::from_str(&reports[0].request_json).unwrap();
        assert_eq!(
            &sent_body, submission,
            "the ledger holds exactly what Vercel received"
        );
        vercel.stop().await;
    }
);

backend_test!(
    a_plan_change_invoices_each_plan_for_its_part_of_the_period,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::manual()).await;
        let test = &vercel.test;
        let (installation, admin, resource_id) = customer(&vercel, "pro").await;
        clock_to(test, at("2026-11-23T12:31:00Z"));
        record(
            test,
            vec![usage(
                "a",
                &resource_id,
                "requests",
                1_500_000,
                at("2026-11-23T12:30:00Z"),
            )],
        )
        .await;
        // On 2026-11-26 at 00:00 the resource moves to the EU plan.
        clock_to(test, at("2026-11-26T00:00:00Z"));
        let changed = vercel
            .partner
            .patch(&format!(
                "{}/resources/{resource_id}",
                installation_path(&installation)
            ))
            .user(&admin)
            .json(&json!({"billingPlanId": "pro-eu", "metadata": {"region": "fra1"}}))
            .send()
            .await;
        assert_eq!(changed.status, 200, "{}", changed.text);
        vercel.drain().await;
        clock_to(test, at("2026-11-26T00:31:00Z"));
        record(
            test,
            vec![usage(
                "b",
                &resource_id,
                "requests",
                1_200_000,
                at("2026-11-26T00:30:00Z"),
            )],
        )
        .await;
        clock_to(test, at("2026-12-01T00:06:00Z"));
        bill(test).await;
        let invoices = vercel.sim.installation(&installation.id).unwrap().invoices;
        let mut by_plan: Vec<(String, String)> = invoices
            .values()
            .map(|i| (i.external_id.clone().unwrap(), i.total.clone()))
            .collect();
        by_plan.sort();
        // Pro: 2.5 of 30 days of 20.00 = 1.67, 500,000 beyond the included
        // requests = 5.00. Pro (EU): 5 of 30 days of 25.00 = 4.17, 200,000
        // beyond = 2.00.
        assert_eq!(
            by_plan,
            vec![
                (format!("{resource_id}:pro-eu:2026-11"), "6.17".to_owned()),
                (format!("{resource_id}:pro:2026-11"), "6.67".to_owned()),
            ]
        );
        vercel.stop().await;
    }
);

backend_test!(
    prepaid_balances_are_credited_drawn_down_and_pushed,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::manual()).await;
        let test = &vercel.test;
        let (installation, admin, resource_id) = customer(&vercel, "prepaid").await;
        let purchase = vercel.sim.create_invoice(&installation.id, "25.00", "paid");
        let credited = vercel
            .partner
            .post(&format!(
                "{}/billing/provision",
                installation_path(&installation)
            ))
            .user(&admin)
            .json(&json!({"invoiceId": purchase}))
            .send()
            .await;
        assert_eq!(credited.status, 200, "{}", credited.text);
        assert_eq!(credited.body["balances"][0]["currencyValueInCents"], 2500);
        // 100,000 requests at 0.00002 cost 2.00.
        clock_to(test, at("2026-11-23T12:21:00Z"));
        record(
            test,
            vec![usage(
                "p",
                &resource_id,
                "requests",
                100_000,
                at("2026-11-23T12:20:00Z"),
            )],
        )
        .await;
        clock_to(test, at("2026-11-23T13:06:00Z"));
        bill(test).await;
        let pushed = vercel.sim.installation(&installation.id).unwrap().balances;
        assert_eq!(pushed.len(), 1);
        assert_eq!(pushed[0]["balances"][0]["currencyValueInCents"], 2300);
        assert!(pushed[0]["balances"][0].get("resourceId").is_none());
        let state = vercel.sim.installation(&installation.id).unwrap();
        assert!(
            state.invoices.values().all(|i| i.external_id.is_none()),
            "prepaid plans are not invoiced"
        );
        // Every hour at least.
        clock_to(test, at("2026-11-23T14:06:00Z"));
        bill(test).await;
        assert_eq!(
            vercel
                .sim
                .installation(&installation.id)
                .unwrap()
                .balances
                .len(),
            2
        );
        vercel.stop().await;
    }
);

backend_test!(
    uninstalling_sends_final_invoices_then_finalizes,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::manual()).await;
        let test = &vercel.test;
        let (installation, admin, resource_id) = customer(&vercel, "pro").await;
        clock_to(test, at("2026-11-23T12:31:00Z"));
        record(
            test,
            vec![usage(
                "u",
                &resource_id,
                "requests",
                1_100_000,
                at("2026-11-23T12:30:00Z"),
            )],
        )
        .await;
        clock_to(test, at("2026-11-24T12:00:00Z"));
        let deleted = vercel
            .partner
            .delete(&installation_path(&installation))
            .user(&admin)
            .json(&json!({"cascadeResourceDeletion": true}))
            .send()
            .await;
        assert_eq!(deleted.status, 200, "{}", deleted.text);
        assert_eq!(
            deleted.body["finalized"], false,
            "a paid plan has a final invoice to send"
        );
        vercel.drain().await;

        clock_to(test, at("2026-11-24T12:11:00Z"));
        bill(test).await;
        test.drain().await;
        let state = vercel.sim.installation(&installation.id).unwrap();
        assert_eq!(state.invoices.len(), 1);
        let invoice = state.invoices.values().next().unwrap();
        assert_eq!(invoice.submission["final"], true);
        // One day of 20.00 is 0.67; 100,000 requests beyond the included
        // million are 1.00.
        assert_eq!(invoice.total, "1.67");
        assert!(
            state.finalized,
            "billing/finalize followed the final invoice"
        );
        let finalize = vercel.sim.recorder().accepted("POST", "/billing/finalize");
        assert_eq!(finalize.len(), 1);
        let invoice_call = vercel.sim.recorder().accepted("POST", "/billing/invoices");
        assert!(
            invoice_call[0].at <= finalize[0].at,
            "the invoice went first"
        );
        let account = vercel.account(&installation).await;
        assert!(account.finalized_at.is_some(), "the account is finalized");
        let mut billing = test.set.clients.billing.clone();
        let answer = billing
            .close_account_billing(billing_pb::CloseAccountBillingRequest {
                context: None,
                account_id: account.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(answer.finalized);
        vercel.stop().await;
    }
);

backend_test!(
    reports_pending_at_a_restart_are_delivered_once_by_the_next_process,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::manual()).await;
        let (installation, _, resource_id) = customer(&vercel, "pro").await;
        clock_to(&vercel.test, at("2026-11-23T12:31:00Z"));
        record(
            &vercel.test,
            vec![usage(
                "x",
                &resource_id,
                "requests",
                1_300_000,
                at("2026-11-23T12:30:00Z"),
            )],
        )
        .await;
        clock_to(&vercel.test, at("2026-12-01T00:06:00Z"));
        // Vercel fails the first attempts; the process stops with the
        // submissions queued.
        vercel
            .sim
            .faults()
            .inject(Fault::status("/billing", 500, 10).method("POST"));
        bill(&vercel.test).await;
        let refused = vercel.sim.recorder().calls_to("POST", "/billing/invoices");
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].status, 500);
        vercel.sim.faults().clear();

        let VercelTest { test, sim, .. } = vercel;
        let test = test.restart().await;
        test.advance(ChronoDuration::seconds(5));
        test.drain().await;
        let state = sim.installation(&installation.id).unwrap();
        assert_eq!(state.invoices.len(), 1);
        let invoice = state.invoices.values().next().unwrap();
        // 7.5 days of 20.00 is 5.00; 300,000 requests beyond are 3.00.
        assert_eq!(invoice.total, "8.00");
        let attempts = sim.recorder().calls_to("POST", "/billing/invoices");
        assert_eq!(
            attempts.len(),
            2,
            "one refused attempt before the restart, one after"
        );
        assert_eq!(attempts[0].body, attempts[1].body);
        let mut billing = test.set.clients.billing.clone();
        let reports = billing
            .list_usage_reports(billing_pb::ListUsageReportsRequest {
                kind: "invoice".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .reports;
        assert_eq!(
            (reports[0].status, reports[0].attempts),
            (billing_pb::ReportStatus::Sent as i32, 2)
        );
        sim.stop();
        test.stop().await;
    }
);

backend_test!(
    an_invoice_whose_answer_was_lost_is_not_created_twice,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::manual()).await;
        let (installation, _, resource_id) = customer(&vercel, "pro").await;
        clock_to(&vercel.test, at("2026-11-23T12:31:00Z"));
        record(
            &vercel.test,
            vec![usage(
                "x",
                &resource_id,
                "requests",
                1_000_100,
                at("2026-11-23T12:30:00Z"),
            )],
        )
        .await;
        // Vercel creates the invoice but its answer is lost; the process
        // stops before it learns the invoice id.
        vercel
            .sim
            .faults()
            .inject(Fault::answer_lost("/billing/invoices", 502, 1).method("POST"));
        clock_to(&vercel.test, at("2026-12-01T00:06:00Z"));
        bill(&vercel.test).await;
        assert_eq!(
            vercel
                .sim
                .installation(&installation.id)
                .unwrap()
                .invoices
                .len(),
            1
        );

        let VercelTest { test, sim, .. } = vercel;
        let test = test.restart().await;
        test.advance(ChronoDuration::seconds(2));
        test.drain().await;
        let invoices = sim.installation(&installation.id).unwrap().invoices;
        assert_eq!(
            invoices.len(),
            1,
            "the external id makes the resubmission the same invoice"
        );
        let invoice = invoices.values().next().unwrap();
        let attempts = sim.recorder().calls_to("POST", "/billing/invoices");
        assert_eq!(attempts.len(), 2);
        assert_eq!(attempts[0].body, attempts[1].body);
        let mut billing = test.set.clients.billing.clone();
        let found = billing
            .get_invoice(billing_pb::GetInvoiceRequest {
                selector: Some(
                    billing_pb::get_invoice_request::Selector::MarketplaceInvoiceId(
                        invoice.id.clone(),
                    ),
                ),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found.external_id, format!("{resource_id}:pro:2026-11"));
        // 7.5 days of 20.00, and 100 requests beyond the million at 0.00001.
        assert_eq!(found.total.unwrap().amount_minor, 500);
        sim.stop();
        test.stop().await;
    }
);

backend_test!(
    installation_level_plans_are_billed_without_a_resource,
    |database| async move {
        let vercel = vercel_set(
            &database,
            VercelOptions {
                manual: true,
                default_installation_plan: Some("team".into()),
                ..Default::default()
            },
        )
        .await;
        let test = &vercel.test;
        let (installation, _) = vercel.install().await;
        vercel.drain().await;
        clock_to(test, at("2026-11-23T13:06:00Z"));
        bill(test).await;
        let state = vercel.sim.installation(&installation.id).unwrap();
        assert_eq!(state.billing_data.len(), 1);
        let items = state.billing_data[0]["billing"]["items"]
            .as_array()
            .unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["billingPlanId"], "team");
        assert!(
            items[0].get("resourceId").is_none(),
            "the plan covers the installation"
        );
        assert_eq!(items[0]["total"], "12.50", "50.00 over 7.5 of 30 days");

        clock_to(test, at("2026-12-01T00:06:00Z"));
        bill(test).await;
        let invoices = vercel.sim.installation(&installation.id).unwrap().invoices;
        assert_eq!(invoices.len(), 1);
        let invoice = invoices.values().next().unwrap();
        assert_eq!(invoice.total, "12.50");
        assert!(invoice.submission["items"][0].get("resourceId").is_none());
        assert!(
            invoice
                .external_id
                .as_deref()
                .is_some_and(|id| id.starts_with("sub_") && id.ends_with(":team:2026-11")),
            "{:?}",
            invoice.external_id
        );
        vercel.stop().await;
    }
);
