//! The whole AWS Marketplace SaaS lifecycle over real HTTP and gRPC, on
//! both databases: purchase (the license event before the buyer
//! registers), registration through the fulfillment URL and the signup
//! form, activation, hourly usage reported exactly once across an AWS outage
//! and a restart, a contract change that moves the plan, deprovisioning
//! with the final usage, and late, duplicated and shuffled events that
//! leave the in-order state. Forged tokens and unauthenticated events are
//! refused.

use crate::aws_support::{AwsTest, EVENT_KEY, clock_to, record, start, start_as};
use chrono::DateTime;
use marketbridge_aws::metering::Licensee;
use marketbridge_config::AwsProductType;
use marketbridge_proto::provisioning::v1::SubscriptionState;
use marketbridge_simulators::aws::{AwsSimulator, DeliveryPlan, Endpoints};
use marketbridge_storage::backend_test;

const UPDATED: &str = "License Updated - Manufacturer";
const DEPROVISIONED: &str = "License Deprovisioned - Manufacturer";
const BUYER: &str = "012345678901";

async fn bill(aws: &AwsTest) {
    aws.test.run_billing().await;
    aws.test.drain().await;
}

/// Two usage events in the 12:00 hour are metered once at 13:20 (a second
/// billing run sends nothing), then an event of the 13:00 hour is recorded and
/// AWS is down when it is due: nothing lands. `prefix` names the events.
async fn an_hour_once_then_an_outage(
    aws: &AwsTest,
    sim: &AwsSimulator,
    subscription_id: &str,
    prefix: &str,
) {
    let id = |n: u8| format!("{prefix}{n}");
    clock_to(aws, "2026-11-23T12:45:00Z");
    record(
        aws,
        subscription_id,
        &[
            (&id(1), "requests", 11, "2026-11-23T12:10:00Z"),
            (&id(2), "requests", 31, "2026-11-23T12:40:00Z"),
        ],
    )
    .await;
    clock_to(aws, "2026-11-23T13:20:00Z");
    bill(aws).await;
    assert_eq!(
        metered(sim),
        rows(&[("requests", "12:00", 42), ("storage_gb", "12:00", 0)])
    );
    let calls = sim.metering_calls();
    clock_to(aws, "2026-11-23T13:30:00Z");
    bill(aws).await;
    assert_eq!(sim.metering_calls(), calls, "an hour is sent once");

    clock_to(aws, "2026-11-23T13:40:00Z");
    record(
        aws,
        subscription_id,
        &[(&id(3), "requests", 5, "2026-11-23T13:10:00Z")],
    )
    .await;
    sim.set_outage(true);
    clock_to(aws, "2026-11-23T14:20:00Z");
    bill(aws).await;
    assert_eq!(metered(sim).len(), 2, "nothing lands during the outage");
}

/// AWS is back at 14:40: the 13:00 hour missed in
/// [`an_hour_once_then_an_outage`] lands, the 12:00 hour is not sent again.
async fn the_missed_hour_lands(aws: &AwsTest, sim: &AwsSimulator) {
    sim.set_outage(false);
    clock_to(aws, "2026-11-23T14:40:00Z");
    aws.test.drain().await;
    assert_eq!(
        metered(sim),
        rows(&[
            ("requests", "12:00", 42),
            ("storage_gb", "12:00", 0),
            ("requests", "13:00", 5),
            ("storage_gb", "13:00", 0),
        ])
    );
}

/// What AWS holds: (dimension, hour, quantity), oldest first.
fn metered(sim: &AwsSimulator) -> Vec<(String, String, i64)> {
    sim.accepted()
        .into_iter()
        .map(|r| {
            let hour = DateTime::from_timestamp(r.hour, 0).unwrap();
            (r.dimension, hour.format("%H:%M").to_string(), r.quantity)
        })
        .collect()
}

fn rows(expected: &[(&str, &str, i64)]) -> Vec<(String, String, i64)> {
    expected
        .iter()
        .map(|(d, h, q)| (d.to_string(), h.to_string(), *q))
        .collect()
}

async fn walk_the_lifecycle(database: marketbridge_storage::testing::TestDatabase) {
    let aws = start(&database).await;
    let sim = aws.sim.clone();

    // Purchase: AWS's license event arrives before the buyer registers.
    let license = sim.purchase(BUYER, &[("pro_tier", 5)], false);
    sim.event(&license, UPDATED);
    aws.settle().await;
    let subscription = aws
        .subscription(&license)
        .await
        .expect("the license is recorded");
    assert_eq!(subscription.state, SubscriptionState::Requested as i32);
    assert!(
        subscription.awaiting_account_approval,
        "nothing is usable before the signup"
    );
    assert_eq!(subscription.product_id, "database");
    assert_eq!(subscription.plan_id, "pro");
    assert!(!aws.allowed(&license).await);

    // Forged and unauthenticated input is refused.
    let forged = sim.register("forged-registration-token").await;
    assert_eq!(forged.status().as_u16(), 401);
    let event = sim.event(&license, UPDATED);
    let _ = sim.deliver().await;
    assert_eq!(sim.post_event_raw(&event.to_string(), None).await, 401);
    assert_eq!(
        sim.post_event_raw(&event.to_string(), Some("not-the-key"))
            .await,
        401
    );
    assert_eq!(
        sim.post_event_raw("{\"not\":\"an event\"}", Some(EVENT_KEY))
            .await,
        400
    );

    // Registration and signup: the license becomes usable.
    aws.sign_up(&license, "Ada Lovelace", "ada@example.com")
        .await;
    aws.settle().await;
    let account = aws
        .account(&license)
        .await
        .expect("the account is recorded");
    assert_eq!(account.marketplace_state, "registered");
    let subscription = aws.subscription(&license).await.unwrap();
    assert_eq!(subscription.state, SubscriptionState::Active as i32);
    assert_eq!(
        Licensee::from_reporting_id(&subscription.usage_reporting_id),
        Some(Licensee::License {
            license_arn: license.clone(),
            customer_aws_account_id: BUYER.into(),
        })
    );
    assert_eq!(
        subscription
            .attributes
            .get("aws_quantity")
            .map(String::as_str),
        Some("5")
    );
    assert!(aws.allowed(&license).await);
    // The same registration again (a browser re-POST) lands on the same
    // account.
    aws.register(&license).await;

    // Hourly usage, each hour once; AWS is down when the next hour is due,
    // and the set restarts.
    an_hour_once_then_an_outage(&aws, &sim, &subscription.id, "u").await;
    let AwsTest {
        test,
        sim: kept,
        clock,
    } = aws;
    let test = test.restart().await;
    let config = &test.set.config.aws;
    kept.set_endpoints(Endpoints {
        fulfillment_url: test.url(&config.fulfillment_path),
        events_url: test.url(&config.events_path),
        sns_url: test.url(&config.sns_path),
        event_key: EVENT_KEY.into(),
    });
    let aws = AwsTest {
        test,
        sim: kept,
        clock,
    };
    the_missed_hour_lands(&aws, &sim).await;

    // The contract changes at the hour: the plan follows the entitlements.
    clock_to(&aws, "2026-11-23T15:00:00Z");
    sim.change_entitlements(&license, &[("free_tier", 1)]);
    sim.event(&license, UPDATED);
    aws.settle().await;
    let subscription = aws.subscription(&license).await.unwrap();
    assert_eq!(subscription.plan_id, "free");
    assert_eq!(subscription.state, SubscriptionState::Active as i32);
    assert_eq!(
        subscription
            .attributes
            .get("aws_quantity")
            .map(String::as_str),
        Some("1")
    );

    // Deprovisioned at 15:30: access ends and the last usage goes out.
    clock_to(&aws, "2026-11-23T15:30:00Z");
    record(
        &aws,
        &subscription.id,
        &[("u4", "requests", 7, "2026-11-23T15:10:00Z")],
    )
    .await;
    sim.deprovision(&license);
    sim.event(&license, DEPROVISIONED);
    aws.settle().await;
    bill(&aws).await;
    assert_eq!(aws.state(&license).await, SubscriptionState::Cancelled);
    assert!(!aws.allowed(&license).await);
    assert_eq!(
        metered(&sim),
        rows(&[
            ("requests", "12:00", 42),
            ("storage_gb", "12:00", 0),
            ("requests", "13:00", 5),
            ("storage_gb", "13:00", 0),
            ("requests", "14:00", 0),
            ("storage_gb", "14:00", 0),
            ("requests", "15:00", 7),
        ]),
        "every hour once, the last one ending at the deprovisioning"
    );

    // Late, duplicated and shuffled events change nothing.
    sim.event(&license, UPDATED);
    sim.event(&license, DEPROVISIONED);
    sim.event(&license, UPDATED);
    for attempt in sim
        .deliver_with(DeliveryPlan {
            duplicate: true,
            shuffle_seed: Some(7),
        })
        .await
    {
        assert_eq!(attempt.status, 200, "{attempt:?}");
    }
    aws.test.drain().await;
    assert_eq!(aws.state(&license).await, SubscriptionState::Cancelled);

    clock_to(&aws, "2026-11-23T19:00:00Z");
    bill(&aws).await;
    assert_eq!(metered(&sim).len(), 7, "nothing after the final usage");
    assert!(
        sim.world().duplicates.is_empty(),
        "no hour was sent with two quantities"
    );
    aws.stop().await;
}

backend_test!(aws_purchase_to_deprovisioning, |database| async move {
    Box::pin(walk_the_lifecycle(database)).await;
});

/// Restarts the set and points the simulator at it again.
async fn restart(aws: AwsTest) -> AwsTest {
    let AwsTest { test, sim, clock } = aws;
    let test = test.restart().await;
    let config = &test.set.config.aws;
    sim.set_endpoints(Endpoints {
        fulfillment_url: test.url(&config.fulfillment_path),
        events_url: test.url(&config.events_path),
        sns_url: test.url(&config.sns_path),
        event_key: EVENT_KEY.into(),
    });
    AwsTest { test, sim, clock }
}

/// A pay-as-you-go (subscription) product: no entitlements, so the
/// license events alone say whether the buyer is subscribed. Registration
/// before the purchase event, activation once both are known, every hour
/// metered once across an outage and a restart, `License Deprovisioned`
/// sending everything unsent at once (the partial hour too), inactive after
/// the final window, and shuffled, duplicated events of another license
/// ending as they would in order.
async fn walk_a_subscription(database: marketbridge_storage::testing::TestDatabase) {
    let aws = start_as(&database, AwsProductType::Subscription, "pro").await;
    let sim = aws.sim.clone();

    // The buyer registers and signs up before AWS's license event: nothing
    // is usable yet.
    let license = sim.purchase(BUYER, &[], false);
    aws.sign_up(&license, "Ada Lovelace", "ada@example.com")
        .await;
    aws.settle().await;
    assert!(aws.account(&license).await.is_some());
    assert!(
        aws.subscription(&license).await.is_none(),
        "a registration alone provisions nothing"
    );
    assert!(!aws.allowed(&license).await);

    // The license event: both are known, the subscription is active.
    sim.event(&license, UPDATED);
    aws.settle().await;
    let subscription = aws.subscription(&license).await.expect("recorded");
    assert_eq!(subscription.state, SubscriptionState::Active as i32);
    assert_eq!(subscription.product_id, "database");
    assert_eq!(subscription.plan_id, "pro");
    assert_eq!(subscription.marketplace_state, "subscribed");
    assert_eq!(
        Licensee::from_reporting_id(&subscription.usage_reporting_id),
        Some(Licensee::License {
            license_arn: license.clone(),
            customer_aws_account_id: BUYER.into(),
        })
    );
    assert!(aws.allowed(&license).await);

    // All usage is metered, each hour once; AWS is down when the next hour
    // is due, and the set restarts.
    an_hour_once_then_an_outage(&aws, &sim, &subscription.id, "s").await;
    let aws = Box::pin(restart(aws)).await;
    the_missed_hour_lands(&aws, &sim).await;

    // License Deprovisioned at 15:30: access ends and everything unsent
    // goes out at once, the partial hour included.
    clock_to(&aws, "2026-11-23T15:30:00Z");
    record(
        &aws,
        &subscription.id,
        &[("s4", "requests", 7, "2026-11-23T15:10:00Z")],
    )
    .await;
    sim.deprovision(&license);
    sim.event(&license, DEPROVISIONED);
    aws.settle().await;
    bill(&aws).await;
    let ended = aws.subscription(&license).await.unwrap();
    assert_eq!(ended.state, SubscriptionState::Cancelled as i32);
    assert_eq!(ended.marketplace_state, "deprovisioning");
    assert!(!aws.allowed(&license).await);
    let final_rows = rows(&[
        ("requests", "12:00", 42),
        ("storage_gb", "12:00", 0),
        ("requests", "13:00", 5),
        ("storage_gb", "13:00", 0),
        ("requests", "14:00", 0),
        ("storage_gb", "14:00", 0),
        ("requests", "15:00", 7),
        ("storage_gb", "15:00", 0),
    ]);
    assert_eq!(metered(&sim), final_rows, "the final flush");

    // After the final window the license is inactive; late and repeated
    // events change nothing else, and nothing more is metered.
    clock_to(&aws, "2026-11-23T16:40:00Z");
    sim.event(&license, UPDATED);
    sim.event(&license, DEPROVISIONED);
    for attempt in sim
        .deliver_with(DeliveryPlan {
            duplicate: true,
            shuffle_seed: Some(3),
        })
        .await
    {
        assert_eq!(attempt.status, 200, "{attempt:?}");
    }
    aws.test.drain().await;
    let inactive = aws.subscription(&license).await.unwrap();
    assert_eq!(inactive.state, SubscriptionState::Cancelled as i32);
    assert_eq!(inactive.marketplace_state, "inactive");
    clock_to(&aws, "2026-11-23T19:00:00Z");
    bill(&aws).await;
    assert_eq!(metered(&sim), final_rows, "nothing after the final usage");

    // Another buyer's purchase and deprovisioning arrive shuffled and
    // duplicated before anything is processed: the in-order end state.
    let other = sim.purchase("109876543210", &[], false);
    sim.event(&other, UPDATED);
    sim.deprovision(&other);
    sim.event(&other, DEPROVISIONED);
    for attempt in sim
        .deliver_with(DeliveryPlan {
            duplicate: true,
            shuffle_seed: Some(11),
        })
        .await
    {
        assert_eq!(attempt.status, 200, "{attempt:?}");
    }
    aws.test.drain().await;
    aws.settle().await;
    let other_subscription = aws.subscription(&other).await.expect("recorded");
    assert_eq!(
        other_subscription.state,
        SubscriptionState::Cancelled as i32
    );
    assert!(!aws.allowed(&other).await);
    assert!(
        sim.world().duplicates.is_empty(),
        "no hour was sent with two quantities"
    );
    aws.stop().await;
}

backend_test!(
    aws_subscription_purchase_to_inactive,
    |database| async move {
        Box::pin(walk_a_subscription(database)).await;
    }
);
