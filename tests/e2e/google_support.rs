//! The set with the Google simulator: start both on one manual clock, let
//! notifications flow (push or pull) until nothing is left to do, sign up
//! through the HTML form over HTTP, and read the resulting state.

#![allow(dead_code)]

use crate::support::{TestSet, set_on};
use chrono::{TimeZone, Utc};
use marketbridge_core::time::ManualClock;
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::common::v1::{AccountSelector, Marketplace};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_simulators::google::{GoogleSimulator, GoogleSimulatorOptions, PUSH_AUDIENCE};
use marketbridge_storage::testing::TestDatabase;
use std::path::PathBuf;
use std::sync::Arc;

/// How notifications reach marketbridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Pub/Sub pushes to the gateway.
    Push,
    /// The account service pulls from the subscription.
    Pull,
}

/// The set, the simulator and their shared clock.
pub struct GoogleTest {
    pub test: TestSet,
    pub sim: Arc<GoogleSimulator>,
    pub clock: ManualClock,
    pub delivery: Delivery,
    key_dir: PathBuf,
}

/// Starts the simulator and the set (outboxes drained by the test).
pub async fn start(database: &TestDatabase, delivery: Delivery) -> GoogleTest {
    start_with(database, delivery, |_| {}).await
}

/// Same, with a configuration change.
pub async fn start_with(
    database: &TestDatabase,
    delivery: Delivery,
    tweak: impl FnOnce(&mut marketbridge_config::Config),
) -> GoogleTest {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap());
    let sim = Arc::new(
        GoogleSimulator::start(GoogleSimulatorOptions::new(Arc::new(clock.clone())))
            .await
            .expect("the Google simulator starts"),
    );
    let key_dir = std::env::temp_dir().join(format!(
        "marketbridge-google-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let key_file = sim
        .write_service_account_key(&key_dir.join("service-account.json"))
        .expect("key file written");
    let configured = sim.clone();
    let test = set_on(database)
        .with_clock(clock.clone())
        .without_workers()
        .configure(move |config| {
            configured.configure(config, &key_file);
            if delivery == Delivery::Pull {
                config.google.pull_subscription = configured.pull_subscription().to_owned();
            }
            tweak(config);
        })
        .start()
        .await;
    let push_url = test.url(&test.set.config.google.push_path);
    sim.set_push_endpoint(&push_url, PUSH_AUDIENCE);
    GoogleTest {
        test,
        sim,
        clock,
        delivery,
        key_dir,
    }
}

impl GoogleTest {
    /// Delivers notifications (pushed or pulled) and runs every outbox until
    /// nothing is left; every push must be acknowledged.
    pub async fn settle(&self) {
        for _ in 0..100 {
            let delivered = self.deliver().await;
            let ran = self.test.drain().await;
            if delivered == 0 && ran == 0 {
                return;
            }
        }
        panic!("notifications kept flowing; the system did not settle");
    }

    /// One round of delivery; returns how many messages went out.
    pub async fn deliver(&self) -> usize {
        match self.delivery {
            Delivery::Push => {
                let attempts = self.sim.deliver_pushes().await;
                for attempt in &attempts {
                    assert!(
                        attempt.acknowledged(),
                        "push of {} ({:?}) answered {}",
                        attempt.event_id,
                        attempt.event_type,
                        attempt.status
                    );
                }
                attempts.len()
            }
            Delivery::Pull => self
                .test
                .set
                .account
                .run_marketplace_work("google.pull")
                .await
                .expect("pull works"),
        }
    }

    /// The shared clock's time.
    pub fn clock_now(&self) -> chrono::DateTime<Utc> {
        use marketbridge_core::time::Clock;
        self.clock.now()
    }

    /// Our account for a procurement account.
    pub async fn account(&self, external_id: &str) -> account_pb::Account {
        self.test
            .set
            .clients
            .account
            .clone()
            .get_account(account_pb::GetAccountRequest {
                account: Some(AccountSelector::by_ref(Marketplace::Google, external_id)),
            })
            .await
            .expect("account exists")
            .into_inner()
    }

    /// Our subscription for an entitlement, if recorded.
    pub async fn subscription(
        &self,
        entitlement_id: &str,
    ) -> Option<provisioning_pb::Subscription> {
        self.test
            .subscription_at(Marketplace::Google, entitlement_id)
            .await
    }

    /// The state of our subscription for an entitlement.
    pub async fn subscription_state(
        &self,
        entitlement_id: &str,
    ) -> provisioning_pb::SubscriptionState {
        self.test
            .subscription_state_at(Marketplace::Google, entitlement_id)
            .await
    }

    /// Resources of an account (including deleted ones).
    pub async fn resources(&self, account_id: &str) -> Vec<provisioning_pb::Resource> {
        self.test.resources_of(account_id).await
    }

    /// Posts the signup token like Google does; returns status and HTML.
    pub async fn open_signup(&self, token: &str) -> (u16, String) {
        let response = self
            .test
            .http
            .post(self.test.url(&self.test.set.config.google.signup_path))
            .form(&[("x-gcp-marketplace-token", token)])
            .send()
            .await
            .expect("signup page answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// Submits the signup form found in `page`; returns status and HTML.
    pub async fn submit_signup(
        &self,
        page: &str,
        name: &str,
        email: &str,
        company: &str,
    ) -> (u16, String) {
        let action = attribute_after(page, "<form", "action").expect("the page has a form");
        let ticket = hidden_value(page, "ticket").expect("the form carries a ticket");
        let response = self
            .test
            .http
            .post(self.test.url(&action))
            .form(&[
                ("ticket", ticket.as_str()),
                ("name", name),
                ("email", email),
                ("company", company),
            ])
            .send()
            .await
            .expect("form submission answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// The whole signup: Google's POST, then the form, over HTTP.
    pub async fn sign_up(&self, account_id: &str, name: &str, email: &str, company: &str) {
        let token = self.sim.signup_token(account_id);
        let (status, page) = self.open_signup(&token).await;
        assert_eq!(status, 200, "{page}");
        assert!(
            !page.contains(&token),
            "the signup token never leaves the POST"
        );
        assert!(page.contains(r#"name="name""#) && page.contains(r#"name="email""#));
        let (status, done) = self.submit_signup(&page, name, email, company).await;
        assert_eq!(status, 200, "{done}");
        assert!(done.contains("You are signed up"), "{done}");
    }

    /// Every call marketbridge made to Google was accepted (reads of
    /// deleted records answer 404, which is no refusal).
    pub fn assert_google_refused_nothing(&self) {
        let refused: Vec<String> = self
            .sim
            .api()
            .recorder
            .calls()
            .into_iter()
            .filter(|c| c.status >= 400 && !(c.method == "GET" && c.status == 404))
            .map(|c| format!("{} {} -> {}", c.method, c.path, c.status))
            .collect();
        assert!(refused.is_empty(), "Google refused calls: {refused:?}");
    }

    /// Successful Procurement calls whose path ends with `suffix`.
    pub fn accepted_calls(&self, suffix: &str) -> Vec<String> {
        self.sim
            .api()
            .recorder
            .calls()
            .into_iter()
            .filter(|c| (200..300).contains(&c.status) && c.path.ends_with(suffix))
            .map(|c| c.path)
            .collect()
    }

    /// Stops everything.
    pub async fn stop(self) {
        let GoogleTest { test, key_dir, .. } = self;
        test.stop().await;
        let _ = std::fs::remove_dir_all(key_dir);
    }
}

/// The value of `name="…"`'s hidden input in `page`.
pub fn hidden_value(page: &str, name: &str) -> Option<String> {
    let marker = format!(r#"name="{name}" value=""#);
    let start = page.find(&marker)? + marker.len();
    let end = page[start..].find('"')?;
    Some(unescape(&page[start..start + end]))
}

/// The value of `attribute` in the first `tag` of `page`.
pub fn attribute_after(page: &str, tag: &str, attribute: &str) -> Option<String> {
    let from = page.find(tag)?;
    let marker = format!(r#"{attribute}=""#);
    let start = from + page[from..].find(&marker)? + marker.len();
    let end = page[start..].find('"')?;
    Some(unescape(&page[start..start + end]))
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}
