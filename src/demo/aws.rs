//! `marketbridge demo aws`: the whole set on SQLite in a temporary folder,
//! the AWS Marketplace simulator next to it, and a license's lifecycle
//! walked step by step: purchase, registration through the fulfillment URL
//! and the signup form, activation, a contract change, usage reported with
//! `BatchMeterUsage`, and deprovisioning.

use crate::set::{RunningSet, SetOptions};
use marketbridge_core::crypto::Cipher;
use marketbridge_core::time::{ManualClock, SharedClock, to_timestamp};
use marketbridge_core::{Error, Result};
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_proto::common::v1::Marketplace;
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_simulators::aws::{
    ACCESS_KEY_ID, AwsSimulator, AwsSimulatorOptions, Endpoints, PRODUCT_CODE, SECRET_ACCESS_KEY,
};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const EVENT_KEY: &str = "demo-eventbridge-connection-key";

fn step(number: u32, text: &str) {
    println!("\n{number:>2}. {text}");
}

fn detail(text: &str) {
    println!("    {text}");
}

async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            return Err(Error::unavailable(format!("timed out waiting for {what}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Demo {
    set: RunningSet,
    sim: Arc<AwsSimulator>,
    clock: ManualClock,
    http: reqwest::Client,
}

impl Demo {
    async fn subscription(&self, license: &str) -> Option<provisioning_pb::Subscription> {
        self.set.subscription_at(Marketplace::Aws, license).await
    }

    async fn wait_for_subscription(
        &self,
        license: &str,
        what: &str,
        accept: impl Fn(&provisioning_pb::Subscription) -> bool,
    ) -> Result<provisioning_pb::Subscription> {
        wait_for(what, || async {
            self.subscription(license).await.filter(|s| accept(s))
        })
        .await
    }

    async fn deliver(&self) -> Result<()> {
        for attempt in self.sim.deliver().await {
            detail(&format!(
                "EventBridge → {} ({}) answered {}",
                attempt.kind, attempt.id, attempt.status
            ));
            if attempt.status != 200 {
                return Err(Error::internal("an event was refused"));
            }
        }
        Ok(())
    }

    /// The buyer's "Set up your account": the registration POST, then the
    /// signup form, over HTTP.
    async fn sign_up(&self, license: &str) -> Result<()> {
        let token = self.sim.registration_token(license);
        let response = self.sim.register(&token).await;
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| Error::internal("the fulfillment URL did not redirect"))?;
        let gateway = &self.set.config.gateway.public_url;
        detail(&format!(
            "POST {gateway}{} with x-amzn-marketplace-token → {} to the signup page",
            self.set.config.aws.fulfillment_path,
            response.status().as_u16()
        ));
        let url = if location.starts_with("http") {
            location
        } else {
            format!("{gateway}{location}")
        };
        let page = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| Error::unavailable(format!("signup page: {e}")))?
            .text()
            .await
            .unwrap_or_default();
        let ticket = value_after(&page, r#"name="ticket" value=""#)
            .ok_or_else(|| Error::internal("the signup page has no form"))?;
        let done = self
            .http
            .post(format!(
                "{gateway}{}/complete",
                self.set.config.aws.fulfillment_path
            ))
            .form(&[
                ("ticket", ticket.as_str()),
                ("name", "Ada Lovelace"),
                ("email", "ada@example.com"),
                ("company", "Analytical Engines Ltd"),
            ])
            .send()
            .await
            .map_err(|e| Error::unavailable(format!("signup form: {e}")))?;
        detail(&format!(
            "submitted name, e-mail and company → HTTP {}",
            done.status().as_u16()
        ));
        Ok(())
    }
}

fn value_after(page: &str, marker: &str) -> Option<String> {
    let start = page.find(marker)? + marker.len();
    let end = page[start..].find('"')?;
    Some(page[start..start + end].replace("&amp;", "&"))
}

/// Runs the demo.
pub async fn aws() -> Result<()> {
    let folder = super::demo_folder("aws")?;
    // A manual clock that starts now, so an hour of usage can pass at once.
    let clock = ManualClock::new(marketbridge_core::time::hour_floor(chrono::Utc::now()));
    let shared: SharedClock = Arc::new(clock.clone());
    let sim = Arc::new(
        AwsSimulator::start(AwsSimulatorOptions::new(shared.clone()))
            .await
            .map_err(|e| Error::unavailable(format!("the AWS simulator: {e}")))?,
    );
    let mut config = super::local_config(&folder);
    config.aws.product_code = PRODUCT_CODE.into();
    config.aws.access_key_id = ACCESS_KEY_ID.into();
    config.aws.secret_access_key = SECRET_ACCESS_KEY.into();
    config.aws.metering_url = sim.url().to_owned();
    config.aws.entitlement_url = sim.url().to_owned();
    config.aws.event_key = EVENT_KEY.into();
    config.aws.sns_certificate_url_pattern = sim.certificate_url_pattern();
    let cipher = Cipher::from_base64_key(&config.security.encryption_key)?;
    let set = RunningSet::start(SetOptions {
        config,
        clock: shared,
        cipher,
        run_workers: true,
    })
    .await?;
    let gateway = set.config.gateway.public_url.clone();
    sim.set_endpoints(Endpoints {
        fulfillment_url: format!("{gateway}{}", set.config.aws.fulfillment_path),
        events_url: format!("{gateway}{}", set.config.aws.events_path),
        sns_url: format!("{gateway}{}", set.config.aws.sns_path),
        event_key: EVENT_KEY.into(),
    });
    println!("marketbridge demo: AWS Marketplace (SaaS contract with consumption)");
    println!("  gateway      {gateway}");
    println!(
        "  simulator    {} (control: {}/simulator)",
        sim.url(),
        sim.url()
    );
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
        "a buyer subscribes to a Pro contract (5 units) on AWS Marketplace",
    );
    let license = sim.purchase("012345678901", &[("pro_tier", 5)], false);
    detail(&format!("AWS issued license {license}"));
    sim.event(&license, "License Updated - Manufacturer");
    demo.deliver().await?;
    let subscription = demo
        .wait_for_subscription(&license, "the license", |s| s.awaiting_account_approval)
        .await?;
    detail(&format!(
        "GetEntitlements → plan {}, {} units; waiting for the buyer to register",
        subscription.plan_id,
        subscription
            .attributes
            .get("aws_quantity")
            .cloned()
            .unwrap_or_default()
    ));

    step(2, "the buyer clicks \"Set up your account\" and signs up");
    demo.sign_up(&license).await?;
    let subscription = demo
        .wait_for_subscription(&license, "activation", |s| {
            s.state == provisioning_pb::SubscriptionState::Active as i32
        })
        .await?;
    detail(&format!(
        "ResolveCustomer resolved the token; the license is ACTIVE, usage reported as {}",
        subscription.usage_reporting_id
    ));

    step(3, "an hour of usage is reported with BatchMeterUsage");
    // Billing learns of the subscription from provisioning's outbox; usage
    // is accepted once that job ran (before the clock moves, so no lease of
    // a running job runs out).
    wait_for("billing to learn of the subscription", || async {
        let stats = demo.set.provisioning.domain().outbox().stats().await.ok()?;
        (stats.pending == 0 && stats.running == 0).then_some(())
    })
    .await?;
    demo.clock.advance(chrono::Duration::minutes(30));
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
                occurred_at: Some(to_timestamp(demo.clock_now())),
            }],
        })
        .await
        .map_err(|e| Error::internal(e.message().to_owned()))?;
    demo.clock.advance(chrono::Duration::minutes(50));
    demo.set.billing.scheduler().run_due().await?;
    let accepted = wait_for("the metering records", || async {
        let accepted = sim.accepted();
        (!accepted.is_empty()).then_some(accepted)
    })
    .await?;
    for record in &accepted {
        detail(&format!(
            "AWS accepted {} × {} for the hour starting {} ({})",
            record.quantity,
            record.dimension,
            chrono::DateTime::from_timestamp(record.hour, 0).unwrap_or_default(),
            record.metering_record_id
        ));
    }

    step(4, "the buyer amends the contract to the Free tier");
    sim.change_entitlements(&license, &[("free_tier", 1)]);
    sim.event(&license, "License Updated - Manufacturer");
    demo.deliver().await?;
    let subscription = demo
        .wait_for_subscription(&license, "the plan change", |s| s.plan_id == "free")
        .await?;
    detail(&format!("GetEntitlements → plan {}", subscription.plan_id));

    step(5, "the license is deprovisioned");
    sim.deprovision(&license);
    sim.event(&license, "License Deprovisioned - Manufacturer");
    demo.deliver().await?;
    demo.wait_for_subscription(&license, "the cancellation", |s| {
        s.state == provisioning_pb::SubscriptionState::Cancelled as i32
    })
    .await?;
    detail("no entitlements left at AWS → CANCELLED, access revoked, final usage sent");
    Ok(())
}

impl Demo {
    fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        use marketbridge_core::time::Clock;
        self.clock.now()
    }
}
