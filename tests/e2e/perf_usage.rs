//! The usage ledger's write path costs a fixed number of statements per
//! `RecordUsage` batch, however many events and customers it holds: one
//! read per table the validation needs, then one short transaction that
//! locks the batch's subscriptions, inserts every event and upserts every
//! hour window with one statement each. Counted, never timed; the ledger's
//! guarantees (idempotent events, all or nothing, exact totals) are checked
//! on the same batches.

use crate::support::{TestSet, set_on};
use chrono::Duration as ChronoDuration;
use marketbridge_core::ErrorCode;
use marketbridge_core::time::to_timestamp;
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_proto::common::v1::{Marketplace, MarketplaceRef};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_storage::backend_test;
use marketbridge_storage::testing::{
    TestBackend, record_statements, statement_counts, statements_between,
};
use std::collections::BTreeMap;

/// A direct customer with `count` metered resources (each its own
/// subscription).
async fn resources(test: &TestSet, count: usize) -> Vec<String> {
    let mut accounts = test.set.clients.account.clone();
    let account = accounts
        .upsert_account(account_pb::UpsertAccountRequest {
            marketplace_ref: Some(MarketplaceRef::new(Marketplace::Direct, "perf-team")),
            display_name: "Perf team".into(),
            ..Default::default()
        })
        .await
        .expect("account")
        .into_inner();
    let mut provisioning = test.set.clients.provisioning.clone();
    let mut ids = Vec::with_capacity(count);
    for index in 0..count {
        let resource = provisioning
            .create_resource(provisioning_pb::CreateResourceRequest {
                account_id: account.id.clone(),
                product_id: "database".into(),
                plan_id: "pro".into(),
                name: format!("perf-{index}"),
                ..Default::default()
            })
            .await
            .expect("resource")
            .into_inner()
            .resource
            .expect("the resource");
        ids.push(resource.id);
    }
    test.drain().await;
    ids
}

/// `size` events named `{prefix}-{n}` spread over `customers`, over two
/// hours; with the sum of their quantities.
fn batch(
    test: &TestSet,
    prefix: &str,
    size: usize,
    customers: &[String],
) -> (billing_pb::RecordUsageRequest, i64) {
    let now = test.now();
    let mut total = 0;
    let events = (0..size)
        .map(|n| {
            let quantity = (n % 7 + 1) as i64;
            total += quantity;
            billing_pb::UsageEvent {
                event_id: format!("{prefix}-{n}"),
                customer: Some(billing_pb::usage_event::Customer::ResourceId(
                    customers[n % customers.len()].clone(),
                )),
                metric_id: "requests".into(),
                quantity,
                occurred_at: Some(to_timestamp(
                    now - ChronoDuration::minutes(90) + ChronoDuration::seconds(n as i64 % 5400),
                )),
            }
        })
        .collect();
    (billing_pb::RecordUsageRequest { events }, total)
}

/// Records `request` and returns the answer with the statements it cost.
async fn recorded(
    test: &TestSet,
    request: billing_pb::RecordUsageRequest,
) -> (
    Result<billing_pb::RecordUsageResponse, tonic::Status>,
    BTreeMap<String, u64>,
) {
    let mut billing = test.set.clients.billing.clone();
    let before = statement_counts();
    let answer = billing.record_usage(request).await.map(|a| a.into_inner());
    let after = statement_counts();
    (answer, statements_between(&before, &after))
}

fn total(statements: &BTreeMap<String, u64>) -> u64 {
    statements.values().sum()
}

fn sent_to(statements: &BTreeMap<String, u64>, prefix: &str) -> u64 {
    statements
        .iter()
        .filter(|(sql, _)| sql.trim_start().starts_with(prefix))
        .map(|(_, count)| count)
        .sum()
}

/// Everything the ledger holds for `customers`.
async fn ledger(test: &TestSet, customers: &[String]) -> i64 {
    let mut billing = test.set.clients.billing.clone();
    let mut sum = 0;
    for resource_id in customers {
        let usage = billing
            .query_usage(billing_pb::QueryUsageRequest {
                customer: Some(billing_pb::query_usage_request::Customer::ResourceId(
                    resource_id.clone(),
                )),
                metric_id: "requests".into(),
                ..Default::default()
            })
            .await
            .expect("query usage")
            .into_inner();
        sum += usage.periods.iter().map(|p| p.quantity).sum::<i64>();
    }
    sum
}

backend_test!(
    a_usage_batch_costs_the_same_few_statements_for_any_number_of_customers,
    |db| async move {
        record_statements();
        let test = set_on(&db).manual_clock().without_workers().start().await;
        let customers = resources(&test, 8).await;
        // The batches' events spread over the two hours after the resources
        // were created.
        test.advance(ChronoDuration::hours(2));

        // 1,000 events of two customers, then 1,000 of eight.
        let (few, few_total) = batch(&test, "few", 1000, &customers[..2]);
        let (answer, few_cost) = recorded(&test, few.clone()).await;
        assert_eq!(answer.expect("recorded").accepted, 1000);
        let (many, many_total) = batch(&test, "many", 1000, &customers);
        let (answer, many_cost) = recorded(&test, many).await;
        assert_eq!(answer.expect("recorded").accepted, 1000);
        eprintln!(
            "statements a batch of 1,000 events cost: {} (2 customers), {} (8 customers)",
            total(&few_cost),
            total(&many_cost)
        );
        assert_eq!(
            total(&few_cost),
            total(&many_cost),
            "the statements of a batch do not grow with its customers:\n{few_cost:#?}\n{many_cost:#?}"
        );
        // Four reads (resources, subscriptions, closures, plan periods), then
        // the subscriptions' lock, the events and the windows; on SQLite the
        // ids already recorded are read first, so the insert returns no rows.
        let sqlite = db.backend() == TestBackend::Sqlite;
        let most = if sqlite { 8 } else { 7 };
        assert!(
            total(&many_cost) <= most,
            "a batch costs at most {most} statements: {many_cost:#?}"
        );
        assert_eq!(
            sent_to(&many_cost, "INSERT INTO usage_events"),
            1,
            "{many_cost:#?}"
        );
        assert_eq!(
            sent_to(&many_cost, "SELECT event_id FROM usage_events"),
            u64::from(sqlite),
            "{many_cost:#?}"
        );
        assert_eq!(
            sent_to(&many_cost, "INSERT INTO usage_windows"),
            1,
            "{many_cost:#?}"
        );
        assert_eq!(ledger(&test, &customers).await, few_total + many_total);

        // A replay changes nothing and answers every event as a duplicate.
        let (answer, _) = recorded(&test, few).await;
        let answer = answer.expect("replayed");
        assert_eq!((answer.accepted, answer.duplicates), (0, 1000));
        assert!(
            answer
                .results
                .iter()
                .all(|r| r.outcome == billing_pb::UsageEventOutcome::Duplicate as i32)
        );
        assert_eq!(ledger(&test, &customers).await, few_total + many_total);

        // Half old, half new: only the new half counts.
        let (mixed, _) = batch(&test, "few", 1000, &customers[..2]);
        let mut mixed = mixed;
        for (n, event) in mixed.events.iter_mut().enumerate().skip(500) {
            event.event_id = format!("fresh-{n}");
        }
        let fresh_total: i64 = mixed.events[500..].iter().map(|e| e.quantity).sum();
        let (answer, _) = recorded(&test, mixed).await;
        let answer = answer.expect("recorded");
        assert_eq!((answer.accepted, answer.duplicates), (500, 500));
        assert_eq!(answer.results[499].event_id, "few-499");
        assert_eq!(
            answer.results[499].outcome,
            billing_pb::UsageEventOutcome::Duplicate as i32
        );
        assert_eq!(
            answer.results[500].outcome,
            billing_pb::UsageEventOutcome::Accepted as i32
        );
        assert_eq!(
            ledger(&test, &customers).await,
            few_total + many_total + fresh_total
        );

        // All or nothing: one unknown customer refuses the whole batch, naming
        // the event, and writes nothing.
        let (mut refused, _) = batch(&test, "refused", 1000, &customers);
        refused.events[737].customer = Some(billing_pb::usage_event::Customer::ResourceId(
            "res_unknown".into(),
        ));
        let (answer, cost) = recorded(&test, refused).await;
        let error = marketbridge_core::Error::from(answer.expect_err("refused"));
        assert_eq!(error.code(), ErrorCode::Validation);
        assert!(
            error
                .fields()
                .iter()
                .any(|f| f.field == "events[737].customer"),
            "{error:?}"
        );
        assert_eq!(sent_to(&cost, "INSERT"), 0, "{cost:#?}");
        assert_eq!(
            ledger(&test, &customers).await,
            few_total + many_total + fresh_total
        );
        test.stop().await;
    }
);

backend_test!(
    concurrent_batches_of_the_same_customers_keep_the_ledger_exact,
    |db| async move {
        let test = set_on(&db).manual_clock().without_workers().start().await;
        let customers = resources(&test, 4).await;
        test.advance(ChronoDuration::hours(2));
        // Eight clients, each sending batches over every customer and window at
        // once; each batch sent twice (a retry), so duplicates race too.
        let mut sent = 0;
        let mut clients = tokio::task::JoinSet::new();
        for client in 0..8 {
            let mut batches = Vec::new();
            for round in 0..3 {
                let (request, total) =
                    batch(&test, &format!("c{client}-r{round}"), 500, &customers);
                sent += total;
                batches.push(request);
            }
            let mut billing = test.set.clients.billing.clone();
            clients.spawn(async move {
                let mut accepted = 0;
                for request in batches {
                    for _ in 0..2 {
                        accepted += billing
                            .record_usage(request.clone())
                            .await
                            .expect("recorded")
                            .into_inner()
                            .accepted;
                    }
                }
                accepted
            });
        }
        let mut accepted = 0;
        while let Some(client) = clients.join_next().await {
            accepted += client.expect("client");
        }
        assert_eq!(accepted, 8 * 3 * 500, "every event accepted once");
        assert_eq!(ledger(&test, &customers).await, sent);
        test.stop().await;
    }
);
