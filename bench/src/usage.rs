//! The usage ledger's write path: several clients, each on its own
//! connection, record usage in batches through `BillingService.RecordUsage`
//! as fast as the service answers.

use crate::grpc::Services;
use crate::stats::Samples;
use marketbridge_core::time::to_timestamp;
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_proto::common::v1::{Marketplace, MarketplaceRef};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use std::time::{Duration, Instant};

/// How the write path is driven.
#[derive(Debug, Clone, Copy)]
pub struct UsageLoad {
    /// Names the run in the events' ids, so runs never repeat an id.
    pub run: &'static str,
    /// Concurrent clients.
    pub clients: usize,
    /// Batches each client sends.
    pub batches: usize,
    /// Events per batch.
    pub batch_size: usize,
}

/// What the write path achieved.
pub struct UsageRun {
    /// Batch latencies and the wall time.
    pub samples: Samples,
    /// Events the ledger accepted.
    pub accepted: u64,
    /// The sum of quantities sent.
    pub sent_total: i64,
}

/// Creates a customer with `count` metered resources and waits until
/// billing knows them all.
pub async fn metered_resources(services: &Services, count: usize) -> Result<Vec<String>, String> {
    let mut accounts = services.account()?;
    let account = accounts
        .upsert_account(account_pb::UpsertAccountRequest {
            marketplace_ref: Some(MarketplaceRef::new(Marketplace::Direct, "bench-team")),
            display_name: "Benchmark team".into(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("account: {e}"))?
        .into_inner();
    let mut provisioning = services.provisioning()?;
    let mut resources = Vec::with_capacity(count);
    for index in 0..count {
        let resource = provisioning
            .create_resource(provisioning_pb::CreateResourceRequest {
                account_id: account.id.clone(),
                product_id: "database".into(),
                plan_id: "pro".into(),
                name: format!("bench-{index}"),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("resource: {e}"))?
            .into_inner()
            .resource
            .ok_or("the resource is missing from the answer")?;
        resources.push(resource.id);
    }
    let mut billing = services.billing()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    for resource_id in &resources {
        loop {
            let known = billing
                .query_usage(billing_pb::QueryUsageRequest {
                    customer: Some(billing_pb::query_usage_request::Customer::ResourceId(
                        resource_id.clone(),
                    )),
                    ..Default::default()
                })
                .await
                .is_ok();
            if known {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("billing never learned about {resource_id}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(resources)
}

/// The batches client `client_index` sends, and the sum of their
/// quantities. Built before the clock starts.
fn batches_of(
    client_index: usize,
    resources: &[String],
    load: UsageLoad,
) -> (Vec<billing_pb::RecordUsageRequest>, i64) {
    let now = to_timestamp(chrono::Utc::now());
    let mut sent_total = 0;
    let batches = (0..load.batches)
        .map(|batch_index| {
            let events = (0..load.batch_size)
                .map(|event_index| {
                    let sequence =
                        (client_index * load.batches + batch_index) * load.batch_size + event_index;
                    let quantity = (sequence % 7 + 1) as i64;
                    sent_total += quantity;
                    billing_pb::UsageEvent {
                        event_id: format!(
                            "bench-{}-{client_index}-{batch_index}-{event_index}",
                            load.run
                        ),
                        customer: Some(billing_pb::usage_event::Customer::ResourceId(
                            resources[sequence % resources.len()].clone(),
                        )),
                        metric_id: "requests".into(),
                        quantity,
                        occurred_at: Some(now),
                    }
                })
                .collect();
            billing_pb::RecordUsageRequest { events }
        })
        .collect();
    (batches, sent_total)
}

/// Runs the write path; each client uses a connection of its own.
pub async fn run(
    services: &Services,
    resources: &[String],
    load: UsageLoad,
) -> Result<UsageRun, String> {
    let mut prepared = Vec::with_capacity(load.clients);
    let mut sent_total = 0;
    for client_index in 0..load.clients {
        let (batches, sent) = batches_of(client_index, resources, load);
        sent_total += sent;
        prepared.push((services.billing()?, batches));
    }
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for (mut billing, batches) in prepared {
        clients.spawn(async move {
            let mut latencies = Vec::with_capacity(batches.len());
            let mut accepted = 0_u64;
            for batch in batches {
                let sent = Instant::now();
                let answer = billing
                    .record_usage(batch)
                    .await
                    .map_err(|e| format!("RecordUsage: {e}"))?
                    .into_inner();
                latencies.push(sent.elapsed());
                accepted += u64::from(answer.accepted);
            }
            Ok::<_, String>((latencies, accepted))
        });
    }
    let mut samples = Samples::default();
    let mut accepted = 0_u64;
    while let Some(joined) = clients.join_next().await {
        let (latencies, client_accepted) =
            joined.map_err(|e| format!("a client failed: {e}"))??;
        samples.extend(latencies);
        accepted += client_accepted;
    }
    samples.elapsed = started.elapsed();
    Ok(UsageRun {
        samples,
        accepted,
        sent_total,
    })
}

/// The sum of every quantity the ledger holds for `resources`.
pub async fn ledger_total(services: &Services, resources: &[String]) -> Result<i64, String> {
    let mut billing = services.billing()?;
    let mut ledger_total = 0;
    for resource_id in resources {
        let usage = billing
            .query_usage(billing_pb::QueryUsageRequest {
                customer: Some(billing_pb::query_usage_request::Customer::ResourceId(
                    resource_id.clone(),
                )),
                metric_id: "requests".into(),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("query usage: {e}"))?
            .into_inner();
        ledger_total += usage.periods.iter().map(|p| p.quantity).sum::<i64>();
    }
    Ok(ledger_total)
}
