//! AWS Marketplace's legacy notifications and registration edge cases, on
//! both databases: an SNS HTTPS subscription confirmed after its signature
//! is checked, a legacy (`CustomerIdentifier`) buyer from `subscribe-success`
//! to `unsubscribe-success` metered in the legacy shape, forged, tampered,
//! foreign and replayed SNS messages refused or ignored, and expired
//! registration tokens refused.

use crate::aws_support::{AwsTest, start};
use chrono::{DateTime, Duration, Utc};
use marketbridge_aws::events::action;
use marketbridge_aws::metering::Licensee;
use marketbridge_core::time::{Clock, to_timestamp};
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_proto::provisioning::v1::SubscriptionState;
use marketbridge_simulators::aws::SUBSCRIPTION_TOPIC;
use marketbridge_storage::backend_test;

fn at(text: &str) -> DateTime<Utc> {
    marketbridge_core::time::parse_rfc3339("at", text).expect("a time")
}

fn clock_to(aws: &AwsTest, to: &str) {
    let to = at(to);
    let now = aws.clock.now();
    aws.clock.advance(to - now);
}

backend_test!(aws_legacy_buyer_over_sns, |database| async move {
    let aws = start(&database).await;
    let sim = aws.sim.clone();

    // The HTTPS subscription is confirmed once its signature verifies.
    assert_eq!(sim.subscribe(SUBSCRIPTION_TOPIC).await, 200);
    assert_eq!(sim.confirmed_topics(), vec![SUBSCRIPTION_TOPIC.to_owned()]);

    // A legacy buyer: subscribe-success, then registration and signup.
    let customer = sim.purchase("210987654321", &[("pro_tier", 2)], true);
    sim.sns_notification(&customer, action::SUBSCRIBE_SUCCESS, "1");
    aws.settle().await;
    assert_eq!(aws.state(&customer).await, SubscriptionState::Requested);
    aws.sign_up(&customer, "Grace Hopper", "grace@example.com")
        .await;
    aws.settle().await;
    let subscription = aws.subscription(&customer).await.unwrap();
    assert_eq!(subscription.state, SubscriptionState::Active as i32);
    assert_eq!(
        Licensee::from_reporting_id(&subscription.usage_reporting_id),
        Some(Licensee::Legacy {
            customer_identifier: customer.clone()
        })
    );

    // Usage goes out in the legacy shape (the simulator refuses a mix).
    clock_to(&aws, "2026-11-23T12:30:00Z");
    let mut billing = aws.test.set.clients.billing.clone();
    billing
        .record_usage(billing_pb::RecordUsageRequest {
            events: vec![billing_pb::UsageEvent {
                event_id: "legacy-1".into(),
                customer: Some(billing_pb::usage_event::Customer::SubscriptionId(
                    subscription.id.clone(),
                )),
                metric_id: "requests".into(),
                quantity: 9,
                occurred_at: Some(to_timestamp(at("2026-11-23T12:20:00Z"))),
            }],
        })
        .await
        .expect("usage recorded");
    clock_to(&aws, "2026-11-23T13:20:00Z");
    aws.test.run_billing().await;
    aws.test.drain().await;
    let accepted = sim.accepted();
    assert!(
        accepted
            .iter()
            .any(|r| r.dimension == "requests" && r.quantity == 9),
        "{accepted:?}"
    );
    assert!(
        accepted
            .iter()
            .all(|r| matches!(r.licensee, Licensee::Legacy { .. }))
    );

    // Tampered, foreign-certificate and unknown-topic messages are refused.
    let genuine = sim.sns_notification(&customer, action::UNSUBSCRIBE_SUCCESS, "2");
    let _held = sim.deliver_with(Default::default()).await;
    let mut tampered = genuine.clone();
    tampered.message_id = "another-id".into();
    assert_eq!(sim.post_sns_raw(&tampered).await, 403);
    let mut foreign = genuine.clone();
    foreign.signing_cert_url = "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem".into();
    assert_eq!(sim.post_sns_raw(&foreign).await, 403);
    let mut other_topic = genuine.clone();
    other_topic.topic_arn = "arn:aws:sns:us-east-1:111111111111:someone-else".into();
    assert_eq!(sim.post_sns_raw(&other_topic).await, 403);

    // The genuine unsubscribe was a hint: AWS still lists the entitlements,
    // so nothing ends until the license is deprovisioned there.
    aws.test.drain().await;
    assert_eq!(aws.state(&customer).await, SubscriptionState::Active);
    sim.deprovision(&customer);
    sim.sns_notification(&customer, action::UNSUBSCRIBE_SUCCESS, "2");
    aws.settle().await;
    assert_eq!(aws.state(&customer).await, SubscriptionState::Cancelled);
    // A replay of the same message is recorded once and changes nothing.
    assert_eq!(sim.post_sns_raw(&genuine).await, 200);
    aws.test.drain().await;
    assert_eq!(aws.state(&customer).await, SubscriptionState::Cancelled);
    aws.stop().await;
});

backend_test!(
    aws_expired_registration_tokens_are_refused,
    |database| async move {
        let aws = start(&database).await;
        let sim = aws.sim.clone();
        let license = sim.purchase("012345678901", &[("pro_tier", 1)], false);
        let token = sim.registration_token(&license);
        aws.clock.advance(Duration::hours(2));
        let refused = sim.register(&token).await;
        assert_eq!(refused.status().as_u16(), 401);
        let page = refused.text().await.unwrap();
        assert!(page.contains("Set up your account"), "{page}");
        assert!(!page.contains(&token));
        assert!(aws.account(&license).await.is_none(), "nothing is recorded");
        // A fresh token works, in the form or in the query string
        // (answered with a 303 that drops it).
        aws.register(&license).await;
        assert!(aws.account(&license).await.is_some());
        let token = sim.registration_token(&license);
        let in_query = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(aws.test.url(&format!(
                "{}?x-amzn-marketplace-token={token}",
                aws.test.set.config.aws.fulfillment_path
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(in_query.status().as_u16(), 303);
        let location = in_query.headers()["location"].to_str().unwrap().to_owned();
        assert!(
            location.contains("ticket=") && !location.contains(&token),
            "{location}"
        );
        aws.stop().await;
    }
);

backend_test!(
    aws_unprocessed_and_throttled_usage_is_retried_once,
    |database| async move {
        let aws = start(&database).await;
        let sim = aws.sim.clone();
        let license = sim.purchase("012345678901", &[("pro_tier", 3)], false);
        aws.sign_up(&license, "Alan Turing", "alan@example.com")
            .await;
        aws.settle().await;
        let subscription = aws.subscription(&license).await.unwrap();
        assert_eq!(subscription.state, SubscriptionState::Active as i32);
        clock_to(&aws, "2026-11-23T12:30:00Z");
        let mut billing = aws.test.set.clients.billing.clone();
        billing
            .record_usage(billing_pb::RecordUsageRequest {
                events: vec![billing_pb::UsageEvent {
                    event_id: "retry-1".into(),
                    customer: Some(billing_pb::usage_event::Customer::SubscriptionId(
                        subscription.id.clone(),
                    )),
                    metric_id: "requests".into(),
                    quantity: 17,
                    occurred_at: Some(to_timestamp(at("2026-11-23T12:15:00Z"))),
                }],
            })
            .await
            .expect("usage recorded");

        // AWS throttles the first call and leaves a record of the second
        // unprocessed; the identical body goes again until all are in.
        sim.world().throttle_next = 1;
        sim.world().unprocessed_next = 1;
        clock_to(&aws, "2026-11-23T13:20:00Z");
        aws.test.run_billing().await;
        for _ in 0..5 {
            aws.test.drain().await;
            aws.clock.advance(Duration::minutes(2));
        }
        let accepted = sim.accepted();
        assert_eq!(accepted.len(), 2, "{accepted:?}");
        assert!(
            accepted
                .iter()
                .any(|r| r.dimension == "requests" && r.quantity == 17)
        );
        assert!(sim.world().duplicates.is_empty());
        assert!(
            sim.metering_calls() >= 3,
            "a throttled call, a partial one, a retry"
        );
        aws.stop().await;
    }
);
