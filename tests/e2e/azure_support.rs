//! The set with the Azure simulator: both on one manual clock, webhook
//! calls delivered and outboxes drained until nothing is left, the landing
//! page and signup form over HTTP, and the resulting state.

#![allow(dead_code)]

use crate::google_support::{attribute_after, hidden_value};
use crate::support::{TestSet, set_on};
use chrono::{TimeZone, Utc};
use marketbridge_core::time::ManualClock;
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::common::v1::{AccountSelector, Marketplace};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_simulators::azure::{AzureSimulator, AzureSimulatorOptions, WebhookAttempt};
use marketbridge_storage::testing::TestDatabase;
use std::sync::Arc;

/// The set, the simulator and their shared clock.
pub struct AzureTest {
    pub test: TestSet,
    pub sim: Arc<AzureSimulator>,
    pub clock: ManualClock,
}

/// Starts the simulator and the set (outboxes drained by the test).
pub async fn start(database: &TestDatabase) -> AzureTest {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap());
    let sim = Arc::new(
        AzureSimulator::start(AzureSimulatorOptions::new(Arc::new(clock.clone())))
            .await
            .expect("the Azure simulator starts"),
    );
    let configured = sim.clone();
    let test = set_on(database)
        .with_clock(clock.clone())
        .without_workers()
        .configure(move |config| configured.configure(config))
        .start()
        .await;
    let azure = AzureTest { test, sim, clock };
    azure.point_simulator();
    azure
}

impl AzureTest {
    /// Tells the simulator where our landing page and webhook are (after a
    /// restart too: the ports change).
    pub fn point_simulator(&self) {
        let config = &self.test.set.config.azure;
        self.sim
            .set_webhook_url(&self.test.url(&config.webhook_path));
        self.sim
            .set_landing_url(&self.test.url(&config.landing_path));
    }

    /// Stops the set and starts it again on the same databases.
    pub async fn restart(self) -> AzureTest {
        let AzureTest { test, sim, clock } = self;
        let test = test.restart().await;
        let azure = AzureTest { test, sim, clock };
        azure.point_simulator();
        azure
    }

    /// Calls the webhook for every held operation and runs every outbox
    /// until nothing is left; every call must be answered 200.
    pub async fn settle(&self) {
        for _ in 0..100 {
            let attempts = self.sim.deliver_webhooks().await;
            assert_all_taken(&attempts);
            let ran = self.test.drain().await;
            if attempts.is_empty() && ran == 0 {
                return;
            }
        }
        panic!("webhook calls kept flowing; the system did not settle");
    }

    /// Our account for a SaaS subscription.
    pub async fn account(&self, subscription_id: &str) -> account_pb::Account {
        self.test
            .set
            .clients
            .account
            .clone()
            .get_account(account_pb::GetAccountRequest {
                account: Some(AccountSelector::by_ref(Marketplace::Azure, subscription_id)),
            })
            .await
            .expect("account exists")
            .into_inner()
    }

    /// Our subscription for an Azure SaaS subscription, if recorded.
    pub async fn subscription(
        &self,
        subscription_id: &str,
    ) -> Option<provisioning_pb::Subscription> {
        self.test
            .subscription_at(Marketplace::Azure, subscription_id)
            .await
    }

    /// The state of our subscription.
    pub async fn subscription_state(
        &self,
        subscription_id: &str,
    ) -> provisioning_pb::SubscriptionState {
        self.test
            .subscription_state_at(Marketplace::Azure, subscription_id)
            .await
    }

    /// Resources of an account (including deleted ones).
    pub async fn resources(&self, account_id: &str) -> Vec<provisioning_pb::Resource> {
        self.test.resources_of(account_id).await
    }

    /// Opens a landing page link as the browser does (following the 303);
    /// returns the final status, URL and HTML.
    pub async fn open_landing(&self, url: &str) -> (u16, String, String) {
        let response = self
            .test
            .http
            .get(url)
            .send()
            .await
            .expect("the landing page answers");
        let status = response.status().as_u16();
        let final_url = response.url().to_string();
        (status, final_url, response.text().await.unwrap_or_default())
    }

    /// Submits the signup form found in `page`; returns status and HTML.
    pub async fn submit_signup(&self, page: &str) -> (u16, String) {
        let action = attribute_after(page, "<form", "action").expect("the page has a form");
        let ticket = hidden_value(page, "ticket").expect("the form carries a ticket");
        let response = self
            .test
            .http
            .post(self.test.url(&action))
            .form(&[
                ("ticket", ticket.as_str()),
                ("name", "Ada Lovelace"),
                ("email", "ada@contoso.example"),
                ("company", "Contoso"),
            ])
            .send()
            .await
            .expect("form submission answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// The whole purchase: the portal's landing link, the form, and every
    /// outbox until the subscription is active. Returns the SaaS
    /// subscription id.
    pub async fn buy_and_sign_up(&self, plan: &str, seats: Option<u64>) -> String {
        let purchase = self.sim.purchase(plan, seats);
        let (status, final_url, page) = self.open_landing(&purchase.landing_url).await;
        assert_eq!(status, 200, "{page}");
        assert!(
            !final_url.contains("token=") && !page.contains(&purchase.token),
            "the purchase token leaves the address bar and never reaches the page"
        );
        self.settle().await;
        let (status, done) = self.submit_signup(&page).await;
        assert_eq!(status, 200, "{done}");
        assert!(done.contains("You are signed up"), "{done}");
        self.settle().await;
        purchase.subscription_id
    }

    /// Every call marketbridge made to Microsoft was accepted (a repeated
    /// activation and a settled operation answer 4xx by design).
    pub fn refused_calls(&self) -> Vec<String> {
        self.sim
            .api()
            .recorder
            .calls()
            .into_iter()
            .filter(|c| c.status >= 400)
            .map(|c| format!("{} {} -> {}", c.method, c.path, c.status))
            .collect()
    }

    /// Stops everything.
    pub async fn stop(self) {
        self.test.stop().await;
    }
}

/// Every webhook call was answered 200.
pub fn assert_all_taken(attempts: &[WebhookAttempt]) {
    for attempt in attempts {
        assert_eq!(
            attempt.status, 200,
            "webhook call {} ({}) answered {}",
            attempt.operation_id, attempt.action, attempt.status
        );
    }
}
