//! AWS Marketplace's legacy notifications and registration edge cases, on
//! both databases: an SNS HTTPS subscription confirmed after its signature
//! is checked, a legacy (`CustomerIdentifier`) buyer from `subscribe-success`
//! to `unsubscribe-success` metered in the legacy shape, forged, tampered,
//! foreign and replayed SNS messages refused or ignored, and expired
//! registration tokens refused.

use crate::aws_support::{clock_to, record, start, start_as};
use chrono::Duration;
use marketbridge_aws::events::action;
use marketbridge_aws::metering::Licensee;
use marketbridge_config::AwsProductType;
use marketbridge_proto::provisioning::v1::SubscriptionState;
use marketbridge_simulators::aws::{DeliveryPlan, SUBSCRIPTION_TOPIC};
use marketbridge_storage::backend_test;

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
    record(
        &aws,
        &subscription.id,
        &[("legacy-1", "requests", 9, "2026-11-23T12:20:00Z")],
    )
    .await;
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
        record(
            &aws,
            &subscription.id,
            &[("retry-1", "requests", 17, "2026-11-23T12:15:00Z")],
        )
        .await;

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

const UPDATED: &str = "License Updated - Manufacturer";
const AMENDED: &str = "Purchase Agreement Amended - Manufacturer";
const ENDED: &str = "Purchase Agreement Ended - Manufacturer";
const CREATED: &str = "Purchase Agreement Created - Proposer";

fn quantity(subscription: &marketbridge_proto::provisioning::v1::Subscription) -> Option<&str> {
    subscription
        .attributes
        .get("aws_quantity")
        .map(String::as_str)
}

/// Agreement events name no license: the license events recorded the
/// mapping. An amendment alone re-reads the contract; an ended agreement is
/// recorded and ends nothing; a renewal is matched through its previous
/// agreement, and later amendments of the renewal find the license too.
/// Duplicated and shuffled deliveries end in the in-order state.
async fn follow_agreements(database: marketbridge_storage::testing::TestDatabase) {
    let aws = start(&database).await;
    let sim = aws.sim.clone();
    let license = sim.purchase("012345678901", &[("pro_tier", 5)], false);
    sim.event(&license, UPDATED);
    aws.sign_up(&license, "Ada Lovelace", "ada@example.com")
        .await;
    aws.settle().await;
    let subscription = aws.subscription(&license).await.unwrap();
    assert_eq!(subscription.state, SubscriptionState::Active as i32);
    assert_eq!(quantity(&subscription), Some("5"));
    let first_agreement = subscription
        .attributes
        .get("aws_agreement_id")
        .cloned()
        .unwrap_or_else(|| sim.world().licenses[&license].agreement_id.clone());

    // An amendment without any license event refreshes the quantities.
    sim.change_entitlements(&license, &[("pro_tier", 8)]);
    sim.agreement_event(&license, AMENDED, "ACTIVE");
    aws.settle().await;
    assert_eq!(
        quantity(&aws.subscription(&license).await.unwrap()),
        Some("8")
    );

    // The agreement is renewed: the new agreement names the old one.
    let renewed = sim.renew(&license);
    sim.change_entitlements(&license, &[("pro_tier", 9)]);
    sim.agreement_event(&license, CREATED, "ACTIVE");
    aws.settle().await;
    assert_eq!(
        quantity(&aws.subscription(&license).await.unwrap()),
        Some("9")
    );

    // Amendments of the renewal, duplicated and shuffled with the old
    // agreement's end: the end is recorded, the license stays active.
    sim.change_entitlements(&license, &[("pro_tier", 12)]);
    sim.agreement_event(&license, AMENDED, "ACTIVE");
    sim.agreement_event(&license, AMENDED, "ACTIVE");
    let ended = sim.agreement_event(&license, ENDED, "RENEWED");
    for attempt in sim
        .deliver_with(DeliveryPlan {
            duplicate: true,
            shuffle_seed: Some(5),
        })
        .await
    {
        assert_eq!(attempt.status, 200, "{attempt:?}");
    }
    aws.test.drain().await;
    let subscription = aws.subscription(&license).await.unwrap();
    assert_eq!(subscription.state, SubscriptionState::Active as i32);
    assert_eq!(quantity(&subscription), Some("12"));
    assert_eq!(
        subscription
            .attributes
            .get(&format!("aws_agreement_ended.{renewed}"))
            .map(String::as_str),
        Some("RENEWED"),
        "{ended}"
    );
    assert!(
        aws.allowed(&license).await,
        "an ended agreement ends nothing"
    );
    assert_ne!(first_agreement, renewed);

    // An agreement's end that arrives before its first license event is
    // recorded once the license is known.
    let late = sim.purchase("222233334444", &[("pro_tier", 2)], false);
    let late_agreement = sim.world().licenses[&late].agreement_id.clone();
    sim.agreement_event(&late, ENDED, "EXPIRED");
    aws.settle().await;
    assert!(aws.subscription(&late).await.is_none());
    sim.event(&late, UPDATED);
    aws.settle().await;
    let late_subscription = aws.subscription(&late).await.unwrap();
    assert_eq!(
        late_subscription
            .attributes
            .get(&format!("aws_agreement_ended.{late_agreement}"))
            .map(String::as_str),
        Some("EXPIRED")
    );
    assert_eq!(quantity(&late_subscription), Some("2"));

    // The simulator's control API amends through the agreement too.
    let answer = reqwest::Client::new()
        .post(format!(
            "{}/simulator/licenses/{late}/entitlements",
            sim.url()
        ))
        .json(&serde_json::json!({"entitlements": {"pro_tier": 4}, "announce": "agreement"}))
        .send()
        .await
        .expect("the control API answers");
    assert_eq!(answer.status().as_u16(), 200);
    let answer: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(answer["eventDelivered"], 200, "{answer}");
    aws.settle().await;
    assert_eq!(quantity(&aws.subscription(&late).await.unwrap()), Some("4"));

    // An agreement nobody knows is acknowledged and changes nothing.
    let stranger = sim.purchase("111122223333", &[("pro_tier", 1)], false);
    sim.agreement_event(&stranger, AMENDED, "ACTIVE");
    aws.settle().await;
    assert!(aws.subscription(&stranger).await.is_none());
    aws.stop().await;
}

backend_test!(
    aws_agreement_events_act_on_their_licenses,
    |database| async move {
        Box::pin(follow_agreements(database)).await;
    }
);

/// Legacy subscription products over SNS: `subscribe-fail` never
/// provisions, even after the buyer signs up; `subscribe-success` with the
/// signup activates, `unsubscribe-pending` sends the final usage and ends
/// access, `unsubscribe-success` makes the license inactive.
async fn legacy_subscriptions(database: marketbridge_storage::testing::TestDatabase) {
    let aws = start_as(&database, AwsProductType::Subscription, "").await;
    let sim = aws.sim.clone();
    assert_eq!(sim.subscribe(SUBSCRIPTION_TOPIC).await, 200);

    let failed = sim.purchase("210987654321", &[], true);
    sim.sns_notification(&failed, action::SUBSCRIBE_FAIL, "2");
    aws.settle().await;
    aws.sign_up(&failed, "Grace Hopper", "grace@example.com")
        .await;
    aws.settle().await;
    assert!(
        aws.subscription(&failed).await.is_none(),
        "never provisioned"
    );
    assert!(!aws.allowed(&failed).await);

    let customer = sim.purchase("210987654322", &[], true);
    aws.sign_up(&customer, "Katherine Johnson", "kj@example.com")
        .await;
    sim.sns_notification(&customer, action::SUBSCRIBE_SUCCESS, "1");
    aws.settle().await;
    let subscription = aws.subscription(&customer).await.unwrap();
    assert_eq!(subscription.state, SubscriptionState::Active as i32);
    assert_eq!(
        subscription.plan_id, "free",
        "the first plan with an AWS id"
    );
    assert_eq!(
        Licensee::from_reporting_id(&subscription.usage_reporting_id),
        Some(Licensee::Legacy {
            customer_identifier: customer.clone()
        })
    );

    clock_to(&aws, "2026-11-23T12:30:00Z");
    record(
        &aws,
        &subscription.id,
        &[("legacy-sub-1", "requests", 4, "2026-11-23T12:20:00Z")],
    )
    .await;
    // The buyer cancels mid-hour: the partial hour goes out at once.
    sim.deprovision(&customer);
    sim.sns_notification(&customer, action::UNSUBSCRIBE_PENDING, "2");
    aws.settle().await;
    aws.test.run_billing().await;
    aws.test.drain().await;
    let pending = aws.subscription(&customer).await.unwrap();
    assert_eq!(pending.state, SubscriptionState::Cancelled as i32);
    assert_eq!(pending.marketplace_state, "deprovisioning");
    assert!(!aws.allowed(&customer).await);
    assert!(
        sim.accepted()
            .iter()
            .any(|r| r.dimension == "requests" && r.quantity == 4),
        "{:?}",
        sim.accepted()
    );
    sim.unsubscribe(&customer);
    sim.sns_notification(&customer, action::UNSUBSCRIBE_SUCCESS, "2");
    aws.settle().await;
    let inactive = aws.subscription(&customer).await.unwrap();
    assert_eq!(inactive.state, SubscriptionState::Cancelled as i32);
    assert_eq!(inactive.marketplace_state, "inactive");
    aws.stop().await;
}

backend_test!(aws_legacy_subscription_products, |database| async move {
    Box::pin(legacy_subscriptions(database)).await;
});
