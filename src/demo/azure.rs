//! `marketbridge demo azure`: the whole set on SQLite in a temporary
//! folder, the Azure Marketplace simulator next to it, and a SaaS
//! subscription's lifecycle walked step by step: purchase, the landing page
//! and the signup form, activation, an hour of usage metered, a seat
//! change and a plan change decided through the operations API, suspension
//! and reinstatement, and cancellation with the final usage.
//!
//! `marketbridge sim azure` ([`simulate`]) runs the simulator alone for
//! trying the flow by hand.

use crate::set::{RunningSet, SetOptions};
use marketbridge_config::Config;
use marketbridge_core::crypto::Cipher;
use marketbridge_core::time::{Clock, ManualClock, SharedClock, to_timestamp};
use marketbridge_core::{Error, Result};
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_proto::common::v1::Marketplace;
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_simulators::azure::{AzureSimulator, AzureSimulatorOptions};
use std::sync::Arc;
use std::time::Duration;

fn step(number: u32, text: &str) {
    println!("\n{number:>2}. {text}");
}

fn detail(text: &str) {
    println!("    {text}");
}

struct Demo {
    set: RunningSet,
    sim: Arc<AzureSimulator>,
    clock: ManualClock,
    http: reqwest::Client,
}

impl Demo {
    async fn subscription(&self, id: &str) -> Result<provisioning_pb::Subscription> {
        self.set
            .subscription_at(Marketplace::Azure, id)
            .await
            .ok_or_else(|| Error::not_found(format!("no subscription for {id}")))
    }

    /// Calls the webhook for what Microsoft holds and runs every outbox.
    async fn settle(&self) -> Result<()> {
        for _ in 0..50 {
            let attempts = self.sim.deliver_webhooks().await;
            for attempt in &attempts {
                detail(&format!(
                    "webhook {} ({}) → HTTP {}",
                    attempt.action, attempt.operation_id, attempt.status
                ));
            }
            let ran = self.set.drain().await?;
            if attempts.is_empty() && ran == 0 {
                return Ok(());
            }
        }
        Err(Error::internal("the set did not settle"))
    }
}

fn value_after(page: &str, marker: &str) -> Option<String> {
    let start = page.find(marker)? + marker.len();
    let end = page[start..].find('"')?;
    Some(page[start..start + end].replace("&amp;", "&"))
}

/// Runs the demo.
pub async fn azure() -> Result<()> {
    let folder = super::demo_folder("azure")?;
    let clock = ManualClock::new(marketbridge_core::time::hour_floor(chrono::Utc::now()));
    let shared: SharedClock = Arc::new(clock.clone());
    let sim = Arc::new(
        AzureSimulator::start(AzureSimulatorOptions::new(shared.clone()))
            .await
            .map_err(|e| Error::unavailable(format!("the Azure simulator: {e}")))?,
    );
    let mut config = super::local_config(&folder);
    sim.configure(&mut config);
    let cipher = Cipher::from_base64_key(&config.security.encryption_key)?;
    let set = RunningSet::start(SetOptions {
        config,
        clock: shared,
        cipher,
        run_workers: false,
    })
    .await?;
    let gateway = set.config.gateway.public_url.clone();
    sim.set_webhook_url(&format!("{gateway}{}", set.config.azure.webhook_path));
    sim.set_landing_url(&format!("{gateway}{}", set.config.azure.landing_path));
    println!("marketbridge demo: Azure Marketplace (SaaS offer with metered dimensions)");
    println!("  gateway      {gateway}");
    println!("  simulator    {}", sim.url());
    println!("  data         {}", folder.display());
    let demo = Demo {
        set,
        sim,
        clock,
        http: reqwest::Client::new(),
    };
    let walked = walk(&demo).await;
    let stopped = demo.set.stop().await;
    let _ = std::fs::remove_dir_all(&folder);
    walked?;
    stopped?;
    println!("\nthe whole lifecycle went through");
    Ok(())
}

async fn walk(demo: &Demo) -> Result<()> {
    let sim = &demo.sim;

    step(
        1,
        "a customer buys the Pro plan (2 seats) in the Azure portal",
    );
    let purchase = sim.purchase("database-pro", Some(2));
    detail(&format!(
        "SaaS subscription {} is PendingFulfillmentStart",
        purchase.subscription_id
    ));

    step(
        2,
        "\"Configure account now\" opens the landing page; the customer signs up",
    );
    let landing = demo
        .http
        .get(&purchase.landing_url)
        .send()
        .await
        .map_err(|e| Error::unavailable(format!("landing page: {e}")))?;
    detail(&format!(
        "GET landing page?token=… → resolved with Microsoft, 303 to {} (token gone from the URL)",
        landing.url().path()
    ));
    let page = landing.text().await.unwrap_or_default();
    demo.settle().await?;
    let ticket = value_after(&page, r#"name="ticket" value=""#)
        .ok_or_else(|| Error::internal("the landing page has no form"))?;
    let done = demo
        .http
        .post(format!(
            "{}{}/complete",
            demo.set.config.gateway.public_url, demo.set.config.azure.landing_path
        ))
        .form(&[
            ("ticket", ticket.as_str()),
            ("name", "Ada Lovelace"),
            ("email", "ada@contoso.example"),
            ("company", "Contoso"),
        ])
        .send()
        .await
        .map_err(|e| Error::unavailable(format!("signup form: {e}")))?;
    detail(&format!("form submitted → HTTP {}", done.status().as_u16()));
    demo.settle().await?;
    let id = purchase.subscription_id.clone();
    let subscription = demo.subscription(&id).await?;
    detail(&format!(
        "activated at Microsoft ({}); our subscription is {:?} on plan {}",
        sim.subscription(&id).map(|s| s.status).unwrap_or_default(),
        provisioning_pb::SubscriptionState::try_from(subscription.state).unwrap_or_default(),
        subscription.plan_id
    ));

    step(3, "an hour of usage goes to the metering API");
    demo.clock.advance(chrono::Duration::minutes(20));
    demo.set
        .clients
        .billing
        .clone()
        .record_usage(billing_pb::RecordUsageRequest {
            events: vec![billing_pb::UsageEvent {
                event_id: "demo-usage-1".into(),
                customer: Some(billing_pb::usage_event::Customer::SubscriptionId(
                    subscription.id.clone(),
                )),
                metric_id: "requests".into(),
                quantity: 1234,
                occurred_at: Some(to_timestamp(demo.clock.now())),
            }],
        })
        .await
        .map_err(|e| Error::internal(e.message().to_owned()))?;
    demo.clock.advance(chrono::Duration::minutes(60));
    demo.set.billing.scheduler().run_due().await?;
    demo.set.drain().await?;
    for usage in sim.usage() {
        detail(&format!(
            "Microsoft accepted {} × {} for the hour starting {} ({})",
            usage.quantity, usage.dimension, usage.hour, usage.usage_event_id
        ));
    }

    step(
        4,
        "the customer adds seats, then asks for a plan the catalog does not offer",
    );
    let seats = sim
        .change_quantity(&id, 5)
        .map_err(|e| Error::internal(e.message))?;
    demo.settle().await?;
    detail(&format!(
        "ChangeQuantity {}",
        sim.operation(&seats).map(|o| o.status).unwrap_or_default()
    ));
    let refused = sim
        .change_plan(&id, "database-enterprise")
        .map_err(|e| Error::internal(e.message))?;
    demo.settle().await?;
    detail(&format!(
        "ChangePlan to database-enterprise {} (PATCH Failure through the operations API)",
        sim.operation(&refused)
            .map(|o| o.status)
            .unwrap_or_default()
    ));

    step(5, "payment fails (Suspend), then is fixed (Reinstate)");
    sim.suspend(&id).map_err(|e| Error::internal(e.message))?;
    demo.settle().await?;
    sim.reinstate(&id).map_err(|e| Error::internal(e.message))?;
    demo.settle().await?;

    step(6, "the customer cancels (Unsubscribe)");
    sim.unsubscribe(&id)
        .map_err(|e| Error::internal(e.message))?;
    demo.settle().await?;
    let subscription = demo.subscription(&id).await?;
    detail(&format!(
        "our subscription is {:?}; resources deprovisioned",
        provisioning_pb::SubscriptionState::try_from(subscription.state).unwrap_or_default()
    ));
    Ok(())
}

/// `marketbridge sim azure`: runs the simulator until `shutdown`, pointed
/// at the gateway, and prints the settings that point marketbridge at it.
pub async fn simulate(
    config: Config,
    shutdown: tokio_util::sync::CancellationToken,
    listen: String,
    gateway_url: Option<String>,
) -> Result<()> {
    let mut options = AzureSimulatorOptions::new(marketbridge_core::time::system_clock());
    options.listen = listen;
    let sim = Arc::new(
        AzureSimulator::start(options)
            .await
            .map_err(|e| Error::unavailable(e.to_string()))?,
    );
    let gateway = gateway_url
        .unwrap_or_else(|| config.gateway.public_url.clone())
        .trim_end_matches('/')
        .to_owned();
    sim.set_webhook_url(&format!("{gateway}{}", config.azure.webhook_path));
    sim.set_landing_url(&format!("{gateway}{}", config.azure.landing_path));
    sim.start_auto_delivery(Duration::from_millis(500));
    println!(
        "Azure Marketplace simulator at {} (Ctrl-C stops it)",
        sim.url()
    );
    println!("\nPoint marketbridge at it:");
    for (key, value) in sim.settings() {
        println!(
            "  export {}='{value}'",
            Config::env_var(&format!("azure.{key}"))
        );
    }
    println!(
        "\nWebhook calls go to {gateway}{}",
        config.azure.webhook_path
    );
    let control = format!("{}/_sim", sim.url());
    println!("\nAct as the customer:");
    println!(
        "  curl -s -XPOST {control}/purchase -H 'content-type: application/json' -d '{{\"planId\":\"database-pro\",\"quantity\":2}}'"
    );
    println!("  open <landingUrl from the answer>                   # \"Configure account now\"");
    println!("  curl -s {control}/subscriptions                      # Microsoft's state");
    println!(
        "  curl -s -XPOST {control}/subscriptions/<id>/changePlan -H 'content-type: application/json' -d '{{\"planId\":\"database-free\"}}'"
    );
    println!(
        "  curl -s -XPOST {control}/subscriptions/<id>/suspend    (reinstate, unsubscribe, renew, changeQuantity)"
    );
    shutdown.cancelled().await;
    Ok(())
}
