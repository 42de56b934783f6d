//! `marketbridge demo google`: the whole set on SQLite in a temporary
//! folder, the Google simulator next to it, and the full Google Cloud
//! Marketplace lifecycle walked step by step, with what happened printed at
//! each step.

use crate::set::{RunningSet, SetOptions};
use marketbridge_core::crypto::Cipher;
use marketbridge_core::time::system_clock;
use marketbridge_core::{Error, Result};
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::common::v1::{AccountSelector, Marketplace};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_simulators::google::{
    GoogleSimulator, GoogleSimulatorOptions, PRODUCT, PUSH_AUDIENCE,
};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The running pieces of the demo.
struct Demo {
    set: RunningSet,
    sim: Arc<GoogleSimulator>,
    http: reqwest::Client,
}

fn step(number: u32, text: &str) {
    println!("\n{number:>2}. {text}");
}

fn detail(text: &str) {
    println!("    {text}");
}

/// Waits until `check` returns `Some`, polling.
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

fn state_name(state: i32) -> String {
    provisioning_pb::SubscriptionState::try_from(state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("SUBSCRIPTION_STATE_")
                .to_owned()
        })
        .unwrap_or_default()
}

impl Demo {
    async fn account(&self, external_id: &str) -> Option<account_pb::Account> {
        self.set
            .clients
            .account
            .clone()
            .get_account(account_pb::GetAccountRequest {
                account: Some(AccountSelector::by_ref(Marketplace::Google, external_id)),
            })
            .await
            .ok()
            .map(|a| a.into_inner())
    }

    async fn subscription(&self, entitlement_id: &str) -> Option<provisioning_pb::Subscription> {
        self.set
            .subscription_at(Marketplace::Google, entitlement_id)
            .await
    }

    async fn wait_for_subscription(
        &self,
        entitlement_id: &str,
        what: &str,
        accept: impl Fn(&provisioning_pb::Subscription) -> bool,
    ) -> Result<provisioning_pb::Subscription> {
        wait_for(what, || async {
            self.subscription(entitlement_id)
                .await
                .filter(|s| accept(s))
        })
        .await
    }

    async fn resources(&self, account_id: &str) -> Vec<provisioning_pb::Resource> {
        self.set.resources_of(account_id).await.unwrap_or_default()
    }

    /// Google's browser POST, the form, and its submission, over HTTP.
    async fn sign_up(&self, account_id: &str) -> Result<()> {
        let config = &self.set.config;
        let signup_url = format!("{}{}", config.gateway.public_url, config.google.signup_path);
        let token = self.sim.signup_token(account_id);
        let page = self
            .http
            .post(&signup_url)
            .form(&[("x-gcp-marketplace-token", token.as_str())])
            .send()
            .await
            .map_err(|e| Error::unavailable(format!("signup page: {e}")))?
            .text()
            .await
            .unwrap_or_default();
        let ticket = value_after(&page, r#"name="ticket" value=""#)
            .ok_or_else(|| Error::internal("the signup page has no form"))?;
        detail(&format!(
            "POST {signup_url} with x-gcp-marketplace-token → the signup form"
        ));
        let done = self
            .http
            .post(format!("{signup_url}/complete"))
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
    Some(page[start..start + end].to_owned())
}

/// Runs the demo; with `pull` the account service pulls notifications
/// instead of receiving pushes.
pub async fn google(pull: bool) -> Result<()> {
    let folder = super::demo_folder("google")?;
    let sim = Arc::new(
        GoogleSimulator::start(GoogleSimulatorOptions::new(system_clock()))
            .await
            .map_err(|e| Error::unavailable(format!("the Google simulator: {e}")))?,
    );
    let key_file = sim
        .write_service_account_key(&folder.join("google-service-account.json"))
        .map_err(|e| Error::unavailable(format!("the service-account key: {e}")))?;
    let mut config = super::local_config(&folder);
    sim.configure(&mut config, &key_file);
    if pull {
        config.google.pull_subscription = sim.pull_subscription().to_owned();
    }
    let cipher = Cipher::from_base64_key(&config.security.encryption_key)?;
    let set = RunningSet::start(SetOptions {
        config,
        clock: system_clock(),
        cipher,
        run_workers: true,
    })
    .await?;
    let gateway = set.config.gateway.public_url.clone();
    if !pull {
        sim.set_push_endpoint(
            &format!("{gateway}{}", set.config.google.push_path),
            PUSH_AUDIENCE,
        );
        sim.start_auto_push(Duration::from_millis(100));
    }
    sim.set_signup_url(&format!("{gateway}{}", set.config.google.signup_path));
    println!("marketbridge demo: Google Cloud Marketplace");
    println!("  gateway      {gateway}");
    println!(
        "  simulator    {} (control: {}/simulator)",
        sim.url(),
        sim.url()
    );
    println!(
        "  delivery     {}",
        if pull { "Pub/Sub pull" } else { "Pub/Sub push" }
    );
    println!("  data         {}", folder.display());
    let demo = Demo {
        set,
        sim,
        http: reqwest::Client::new(),
    };
    let walked = walk(&demo).await;
    demo.sim.stop_auto_push();
    let stopped = demo.set.stop().await;
    let _ = std::fs::remove_dir_all(&folder);
    walked?;
    stopped?;
    println!("\nthe whole lifecycle went through");
    Ok(())
}

async fn walk(demo: &Demo) -> Result<()> {
    let sim = &demo.sim;
    let google_error = |e: marketbridge_simulators::google::ApiError| Error::internal(e.message);

    step(
        1,
        "a customer buys the Pro plan on Google Cloud Marketplace",
    );
    let purchase = sim.purchase(PRODUCT, "pro-plan");
    detail(&format!(
        "Google created account {} and entitlement {}",
        purchase.account_id, purchase.entitlement_id
    ));
    let account = wait_for("the account", || async {
        demo.account(&purchase.account_id).await
    })
    .await?;
    detail(&format!(
        "ACCOUNT_ACTIVE recorded → our account {} (signup pending)",
        account.id
    ));
    let subscription = demo
        .wait_for_subscription(&purchase.entitlement_id, "the entitlement", |s| {
            s.awaiting_account_approval
        })
        .await?;
    detail(&format!(
        "ENTITLEMENT_CREATION_REQUESTED recorded → subscription {} is {}, waiting for the signup",
        subscription.id,
        state_name(subscription.state)
    ));

    step(2, "the customer signs up through our signup page");
    demo.sign_up(&purchase.account_id).await?;
    let subscription = demo
        .wait_for_subscription(&purchase.entitlement_id, "activation", |s| {
            s.state == provisioning_pb::SubscriptionState::Active as i32
        })
        .await?;
    let approvals: Vec<String> = sim
        .api()
        .recorder
        .accepted("POST", ":approve")
        .into_iter()
        .map(|c| c.path)
        .collect();
    for path in &approvals {
        detail(&format!("Google accepted POST {path}"));
    }
    detail(&format!(
        "ENTITLEMENT_ACTIVE → subscription {} on plan {}",
        state_name(subscription.state),
        subscription.plan_id
    ));
    let account = wait_for("the resource", || async {
        let account = demo.account(&purchase.account_id).await?;
        let ready = demo
            .resources(&account.id)
            .await
            .into_iter()
            .any(|r| r.status == provisioning_pb::ResourceStatus::Ready as i32);
        ready.then_some(account)
    })
    .await?;
    detail("the database resource is provisioned and READY");

    step(3, "the customer asks for the Free plan");
    sim.request_plan_change(&purchase.entitlement_id, "free-plan")
        .map_err(google_error)?;
    let subscription = demo
        .wait_for_subscription(&purchase.entitlement_id, "the plan change", |s| {
            s.plan_id == "free"
        })
        .await?;
    detail(&format!(
        "approved with pendingPlanName=free-plan; ENTITLEMENT_PLAN_CHANGED → plan {}",
        subscription.plan_id
    ));

    step(4, "the customer cancels at the end of the term");
    sim.cancel(&purchase.entitlement_id).map_err(google_error)?;
    demo.wait_for_subscription(&purchase.entitlement_id, "pending cancellation", |s| {
        s.state == provisioning_pb::SubscriptionState::PendingCancellation as i32
    })
    .await?;
    detail("PENDING_CANCELLATION → access continues until the term ends");

    step(5, "the customer changes their mind");
    sim.revert_cancellation(&purchase.entitlement_id)
        .map_err(google_error)?;
    demo.wait_for_subscription(&purchase.entitlement_id, "the revert", |s| {
        s.state == provisioning_pb::SubscriptionState::Active as i32
    })
    .await?;
    detail("ENTITLEMENT_CANCELLATION_REVERTED → ACTIVE again");

    step(6, "the customer cancels again and the term ends");
    sim.cancel(&purchase.entitlement_id).map_err(google_error)?;
    sim.end_term(&purchase.entitlement_id)
        .map_err(google_error)?;
    demo.wait_for_subscription(&purchase.entitlement_id, "the cancellation", |s| {
        s.state == provisioning_pb::SubscriptionState::Cancelled as i32
    })
    .await?;
    wait_for("deprovisioning", || async {
        demo.resources(&account.id)
            .await
            .iter()
            .all(|r| r.status == provisioning_pb::ResourceStatus::Uninstalled as i32)
            .then_some(())
    })
    .await?;
    detail("ENTITLEMENT_CANCELLED → CANCELLED, the resource is deprovisioned");

    step(7, "Google deletes the entitlement's record");
    sim.delete_entitlement(&purchase.entitlement_id)
        .map_err(google_error)?;
    demo.wait_for_subscription(&purchase.entitlement_id, "the tombstone", |s| {
        s.attributes.contains_key("deleted_at_marketplace")
    })
    .await?;
    detail("ENTITLEMENT_DELETED → kept as a tombstone");

    step(8, "the customer's account is deleted from the Marketplace");
    sim.delete_account(&purchase.account_id)
        .map_err(google_error)?;
    let account = wait_for("the account deletion", || async {
        demo.account(&purchase.account_id)
            .await
            .filter(|a| a.purged)
    })
    .await?;
    detail(&format!(
        "ACCOUNT_DELETED → account {} closed, personal data purged (contact: {:?})",
        account.id,
        account.contact.map(|c| c.email).unwrap_or_default()
    ));
    let refused = sim
        .api()
        .recorder
        .calls()
        .into_iter()
        .filter(|c| c.status >= 400 && c.method != "GET")
        .count();
    detail(&format!(
        "{} notifications published; Google refused {refused} of our calls",
        sim.published().len()
    ));
    Ok(())
}
