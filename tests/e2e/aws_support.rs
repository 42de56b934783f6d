//! The set with the AWS Marketplace simulator on one manual clock: the
//! buyer's registration POST, the signup form over HTTP, EventBridge and SNS
//! deliveries, and reads of the resulting state.

#![allow(dead_code)]

use crate::google_support::{attribute_after, hidden_value};
use crate::support::{TestSet, set_on};
use chrono::{DateTime, TimeZone, Utc};
use marketbridge_config::AwsProductType;
use marketbridge_core::time::{Clock, ManualClock};
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::common::v1::{AccountSelector, Marketplace};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_simulators::aws::{
    ACCESS_KEY_ID, AwsSimulator, AwsSimulatorOptions, ENTITLEMENT_TOPIC, Endpoints, PRODUCT_CODE,
    SECRET_ACCESS_KEY, SUBSCRIPTION_TOPIC,
};
use marketbridge_storage::testing::TestDatabase;
use std::sync::Arc;

/// The EventBridge connection's API key in tests.
pub const EVENT_KEY: &str = "eventbridge-connection-key-for-tests";

/// The set, the simulator and their shared clock.
pub struct AwsTest {
    pub test: TestSet,
    pub sim: Arc<AwsSimulator>,
    pub clock: ManualClock,
}

/// Starts the simulator and the set (outboxes drained by the test).
pub async fn start(database: &TestDatabase) -> AwsTest {
    Box::pin(start_as(database, AwsProductType::default(), "")).await
}

/// [`start`] for a listing priced as `product_type`; subscription licenses
/// are on `subscription_plan` (empty for the first AWS plan).
pub async fn start_as(
    database: &TestDatabase,
    product_type: AwsProductType,
    subscription_plan: &str,
) -> AwsTest {
    let subscription_plan = subscription_plan.to_owned();
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap());
    let sim = Arc::new(
        AwsSimulator::start(AwsSimulatorOptions::new(Arc::new(clock.clone())))
            .await
            .expect("the AWS simulator starts"),
    );
    let url = sim.url().to_owned();
    let pattern = sim.certificate_url_pattern();
    let test = set_on(database)
        .with_clock(clock.clone())
        .without_workers()
        .configure(move |config| {
            config.aws.product_code = PRODUCT_CODE.into();
            config.aws.product_type = product_type;
            config.aws.subscription_plan = subscription_plan.clone();
            config.aws.access_key_id = ACCESS_KEY_ID.into();
            config.aws.secret_access_key = SECRET_ACCESS_KEY.into();
            config.aws.metering_url = url.clone();
            config.aws.entitlement_url = url;
            config.aws.event_key = EVENT_KEY.into();
            config.aws.sns_topic_arns = format!("{SUBSCRIPTION_TOPIC},{ENTITLEMENT_TOPIC}");
            config.aws.sns_certificate_url_pattern = pattern;
        })
        .start()
        .await;
    let aws = &test.set.config.aws;
    sim.set_endpoints(Endpoints {
        fulfillment_url: test.url(&aws.fulfillment_path),
        events_url: test.url(&aws.events_path),
        sns_url: test.url(&aws.sns_path),
        event_key: EVENT_KEY.into(),
    });
    AwsTest { test, sim, clock }
}

impl AwsTest {
    /// Delivers every held event (each must be accepted) and runs the
    /// outboxes until nothing is left.
    pub async fn settle(&self) {
        for attempt in self.sim.deliver().await {
            assert_eq!(attempt.status, 200, "{attempt:?} was refused");
        }
        for _ in 0..100 {
            if self.test.drain().await == 0 {
                return;
            }
        }
        panic!("the outboxes did not settle");
    }

    /// The registration POST of a fresh token; returns the signup page
    /// the 303 leads to.
    pub async fn register(&self, license: &str) -> String {
        let token = self.sim.registration_token(license);
        let response = self.sim.register(&token).await;
        assert_eq!(
            response.status().as_u16(),
            303,
            "the registration POST is redirected"
        );
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("a location")
            .to_owned();
        assert!(!location.contains(&token), "the token leaves the URL");
        let location = if location.starts_with("http") {
            location
        } else {
            self.test.url(&location)
        };
        let page = self
            .test
            .http
            .get(location)
            .send()
            .await
            .expect("the signup page answers");
        assert_eq!(page.status().as_u16(), 200);
        let page = page.text().await.unwrap();
        assert!(!page.contains(&token), "the token is not on the page");
        page
    }

    /// Registration and the signup form, over HTTP.
    pub async fn sign_up(&self, license: &str, name: &str, email: &str) {
        let page = self.register(license).await;
        let action = attribute_after(&page, "<form", "action").expect("the page has a form");
        let ticket = hidden_value(&page, "ticket").expect("the form carries a ticket");
        let response = self
            .test
            .http
            .post(self.test.url(&action))
            .form(&[
                ("ticket", ticket.as_str()),
                ("name", name),
                ("email", email),
                ("company", "Example Co"),
            ])
            .send()
            .await
            .expect("the form answers");
        let status = response.status().as_u16();
        let done = response.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{done}");
        assert!(done.contains("You are signed up"), "{done}");
    }

    /// Our account for a license.
    pub async fn account(&self, license: &str) -> Option<account_pb::Account> {
        self.test
            .set
            .clients
            .account
            .clone()
            .get_account(account_pb::GetAccountRequest {
                account: Some(AccountSelector::by_ref(Marketplace::Aws, license)),
            })
            .await
            .ok()
            .map(|a| a.into_inner())
    }

    /// Our subscription for a license, if recorded.
    pub async fn subscription(&self, license: &str) -> Option<provisioning_pb::Subscription> {
        self.test.subscription_at(Marketplace::Aws, license).await
    }

    /// The state of our subscription for a license.
    pub async fn state(&self, license: &str) -> provisioning_pb::SubscriptionState {
        self.test
            .subscription_state_at(Marketplace::Aws, license)
            .await
    }

    /// Whether the entitlement check lets the license's account in.
    pub async fn allowed(&self, license: &str) -> bool {
        self.test
            .set
            .clients
            .provisioning
            .clone()
            .check_entitlement(provisioning_pb::CheckEntitlementRequest {
                account: Some(AccountSelector::by_ref(Marketplace::Aws, license)),
                ..Default::default()
            })
            .await
            .expect("the entitlement check answers")
            .into_inner()
            .allowed
    }

    /// Stops everything.
    pub async fn stop(self) {
        self.test.stop().await;
    }
}

/// A time written in RFC 3339.
pub fn at(text: &str) -> DateTime<Utc> {
    marketbridge_core::time::parse_rfc3339("at", text).expect("a time")
}

/// Moves the set's clock forward to `to`.
pub fn clock_to(aws: &AwsTest, to: &str) {
    let to = at(to);
    let now = aws.clock.now();
    assert!(to >= now, "time only moves forward");
    aws.clock.advance(to - now);
}

/// Records usage events `(id, metric, quantity, time)` of a subscription.
pub async fn record(aws: &AwsTest, subscription_id: &str, events: &[(&str, &str, i64, &str)]) {
    crate::support::record_usage(&aws.test.set, subscription_id, events).await;
}
