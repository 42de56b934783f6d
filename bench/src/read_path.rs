//! The read path: a plan listing through the gateway (Vercel's
//! `GET /v1/products/{slug}/plans`, with a token signed by the Vercel
//! simulator and verified by the gateway) against the same listing asked of
//! the billing service directly over gRPC.

use crate::stats::Samples;
use marketbridge::set::RunningSet;
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_proto::common::v1::Marketplace;
use marketbridge_rpc::BillingClient;
use std::time::{Duration, Instant};

/// How the read path is driven.
#[derive(Debug, Clone, Copy)]
pub struct ReadLoad {
    /// Concurrent clients, each on its own connection.
    pub clients: usize,
    /// Calls per client.
    pub calls: usize,
}

/// Plan listings through the gateway, as Vercel asks for them.
pub async fn through_gateway(
    set: &RunningSet,
    token: &str,
    load: ReadLoad,
) -> Result<Samples, String> {
    let url = format!(
        "{}{}/v1/products/database/plans",
        set.gateway_url(),
        set.config.vercel.base_path
    );
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..load.clients {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        let (url, token) = (url.clone(), token.to_owned());
        clients.spawn(async move {
            let mut latencies = Vec::with_capacity(load.calls);
            for _ in 0..load.calls {
                let sent = Instant::now();
                let response = http
                    .get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .map_err(|e| format!("gateway: {e}"))?;
                let status = response.status();
                let body: serde_json::Value = response
                    .json()
                    .await
                    .map_err(|e| format!("gateway body: {e}"))?;
                latencies.push(sent.elapsed());
                if !status.is_success() || !body["plans"].is_array() {
                    return Err(format!("gateway answered {status}: {body}"));
                }
            }
            Ok::<_, String>(latencies)
        });
    }
    collect(clients, started).await
}

/// The same listing over gRPC.
pub async fn over_grpc(set: &RunningSet, load: ReadLoad) -> Result<Samples, String> {
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..load.clients {
        let channel = marketbridge_rpc::channel(
            &set.config.gateway.billing_url,
            &marketbridge_rpc::ClientCredentials::of_set(&set.config),
            Duration::from_secs(30),
        )
        .map_err(|e| e.to_string())?;
        let mut billing = BillingClient::new(channel);
        clients.spawn(async move {
            let mut latencies = Vec::with_capacity(load.calls);
            for _ in 0..load.calls {
                let sent = Instant::now();
                let plans = billing
                    .list_plans(billing_pb::ListPlansRequest {
                        product_id: "database".into(),
                        marketplace: Marketplace::Vercel as i32,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| format!("gRPC: {e}"))?
                    .into_inner();
                latencies.push(sent.elapsed());
                if plans.plans.is_empty() {
                    return Err("gRPC listed no plans".to_owned());
                }
            }
            Ok::<_, String>(latencies)
        });
    }
    collect(clients, started).await
}

async fn collect(
    mut clients: tokio::task::JoinSet<Result<Vec<Duration>, String>>,
    started: Instant,
) -> Result<Samples, String> {
    let mut samples = Samples::default();
    while let Some(joined) = clients.join_next().await {
        samples.extend(joined.map_err(|e| format!("a client failed: {e}"))??);
    }
    samples.elapsed = started.elapsed();
    Ok(samples)
}
