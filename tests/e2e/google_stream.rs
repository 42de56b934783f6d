//! Several hundred notifications, shuffled, partly delayed and each
//! delivered twice, end in exactly the state the in-order stream reaches:
//! no approval twice, nothing missed.

use crate::google_support::{Delivery, GoogleTest, start};
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_simulators::google::{DeliveryPlan, PRODUCT};
use marketbridge_storage::backend_test;
use marketbridge_storage::testing::TestDatabase;
use std::collections::BTreeMap;

/// Customers in the scenario.
const CUSTOMERS: usize = 48;

/// How the stream is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Each message once, in publish order, as soon as it exists.
    InOrder,
    /// Shuffled, each twice, and about a third held back to the next batch.
    Shuffled,
}

/// One customer's ids at Google.
#[derive(Debug, Clone, Default)]
struct Customer {
    account: String,
    first: String,
    second: Option<String>,
}

struct Stream<'a> {
    google: &'a GoogleTest,
    order: Order,
    round: u64,
    delivered: usize,
}

impl Stream<'_> {
    async fn settle(&mut self) {
        for _ in 0..200 {
            let queued = self.google.sim.pending_pushes();
            let attempts = match self.order {
                Order::InOrder => self.google.sim.deliver_pushes().await,
                Order::Shuffled => {
                    self.round += 1;
                    let plan = DeliveryPlan {
                        shuffle_seed: Some(7919 * self.round),
                        duplicate: true,
                        limit: Some(queued - queued / 3),
                    };
                    self.google.sim.deliver_pushes_with(plan).await
                }
            };
            assert!(
                attempts.iter().all(|a| a.acknowledged()),
                "every push is acknowledged"
            );
            self.delivered += attempts.len();
            let ran = self.google.test.drain().await;
            if attempts.is_empty() && ran == 0 && self.google.sim.pending_pushes() == 0 {
                return;
            }
        }
        panic!("the stream did not settle");
    }
}

/// The same customer actions whatever the delivery order.
async fn play(google: &GoogleTest, order: Order) -> (Vec<Customer>, usize) {
    let sim = &google.sim;
    let mut stream = Stream {
        google,
        order,
        round: 0,
        delivered: 0,
    };
    let mut customers: Vec<Customer> = (0..CUSTOMERS)
        .map(|i| {
            let plan = if i % 2 == 0 { "pro-plan" } else { "free-plan" };
            let purchase = sim.purchase(PRODUCT, plan);
            Customer {
                account: purchase.account_id,
                first: purchase.entitlement_id,
                second: None,
            }
        })
        .collect();
    // Some customers sign up before any notification reached us.
    for (i, customer) in customers.iter().enumerate() {
        if i % 4 == 0 {
            google
                .sign_up(
                    &customer.account,
                    &format!("Customer {i}"),
                    &format!("c{i}@example.com"),
                    "",
                )
                .await;
        }
    }
    stream.settle().await;
    for (i, customer) in customers.iter().enumerate() {
        if i % 4 != 0 {
            google
                .sign_up(
                    &customer.account,
                    &format!("Customer {i}"),
                    &format!("c{i}@example.com"),
                    "",
                )
                .await;
        }
    }
    stream.settle().await;

    // Plan changes, cancellations and second orders, then reverts and term
    // ends before anything is delivered.
    for (i, customer) in customers.iter_mut().enumerate() {
        match i % 3 {
            0 => {
                let to = if i % 2 == 0 { "free-plan" } else { "pro-plan" };
                sim.request_plan_change(&customer.first, to).unwrap();
            }
            1 => sim.cancel(&customer.first).unwrap(),
            _ => {}
        }
        if i % 5 == 0 {
            customer.second = Some(
                sim.purchase_for(&customer.account, PRODUCT, "free-plan")
                    .entitlement_id,
            );
        }
    }
    for (i, customer) in customers.iter().enumerate() {
        if i % 3 == 1 {
            if i % 2 == 0 {
                sim.revert_cancellation(&customer.first).unwrap();
            } else {
                sim.end_term(&customer.first).unwrap();
            }
        }
    }
    stream.settle().await;

    // Records of cancelled entitlements are deleted; some accounts go.
    for (i, customer) in customers.iter().enumerate() {
        if i % 3 == 1 && i % 2 == 1 {
            sim.delete_entitlement(&customer.first).unwrap();
        }
        if i % 7 == 0 {
            sim.delete_account(&customer.account).unwrap();
        }
    }
    stream.settle().await;
    (customers, stream.delivered)
}

/// Everything about a customer that matters, by position in the scenario.
async fn final_state(google: &GoogleTest, customers: &[Customer]) -> Vec<String> {
    let mut lines = Vec::new();
    for (i, customer) in customers.iter().enumerate() {
        let account = google.account(&customer.account).await;
        lines.push(format!(
            "{i} account state={} signup={} purged={} contact={}",
            account.state,
            account.signup_state,
            account.purged,
            account.contact.map(|c| c.email).unwrap_or_default()
        ));
        for (role, entitlement) in [
            ("first", Some(&customer.first)),
            ("second", customer.second.as_ref()),
        ] {
            let Some(entitlement) = entitlement else {
                continue;
            };
            let subscription = google.subscription(entitlement).await.expect("recorded");
            lines.push(format!(
                "{i} {role} state={} plan={} pending={} deleted_at_google={}",
                subscription.state,
                subscription.plan_id,
                subscription.pending_plan_id,
                subscription
                    .attributes
                    .contains_key("deleted_at_marketplace")
            ));
        }
        let mut resources: Vec<String> = google
            .resources(&account.id)
            .await
            .into_iter()
            .map(|r| {
                format!(
                    "{}:{}",
                    r.plan_id,
                    provisioning_pb::ResourceStatus::try_from(r.status)
                        .map(|s| s.as_str_name().to_owned())
                        .unwrap_or_default()
                )
            })
            .collect();
        resources.sort();
        lines.push(format!("{i} resources {resources:?}"));
    }
    lines
}

/// Each entitlement and account approved exactly once, each plan change
/// decided once, and Google never refused a call.
fn assert_approved_once(google: &GoogleTest, customers: &[Customer]) {
    google.assert_google_refused_nothing();
    let mut approvals: BTreeMap<String, usize> = BTreeMap::new();
    for call in google.sim.api().recorder.accepted("POST", ":approve") {
        *approvals.entry(call.path).or_default() += 1;
    }
    for customer in customers {
        let account_path = format!(
            "/v1/providers/{}/accounts/{}:approve",
            google.sim.provider_id(),
            customer.account
        );
        assert_eq!(approvals.get(&account_path), Some(&1), "{account_path}");
        for entitlement in std::iter::once(&customer.first).chain(customer.second.iter()) {
            let path = format!(
                "/v1/providers/{}/entitlements/{entitlement}:approve",
                google.sim.provider_id()
            );
            assert_eq!(approvals.get(&path), Some(&1), "{path}");
        }
    }
    let mut decisions: BTreeMap<String, usize> = BTreeMap::new();
    for call in google
        .sim
        .api()
        .recorder
        .accepted("POST", ":approvePlanChange")
    {
        *decisions.entry(call.path).or_default() += 1;
    }
    assert_eq!(decisions.len(), customers.len().div_ceil(3));
    assert!(decisions.values().all(|count| *count == 1), "{decisions:?}");
}

async fn events_processed(google: &GoogleTest) -> usize {
    let mut count = 0;
    let mut token = String::new();
    loop {
        let page = google
            .test
            .set
            .clients
            .account
            .clone()
            .list_marketplace_events(account_pb::ListMarketplaceEventsRequest {
                page: Some(marketbridge_proto::common::v1::PageRequest {
                    page_size: 500,
                    page_token: token.clone(),
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for event in &page.events {
            assert_eq!(
                event.status,
                account_pb::EventStatus::Processed as i32,
                "{} {}: {}",
                event.event_type,
                event.external_id,
                event.error
            );
        }
        count += page.events.len();
        match page
            .page
            .map(|p| p.next_page_token)
            .filter(|t| !t.is_empty())
        {
            Some(next) => token = next,
            None => return count,
        }
    }
}

async fn shuffled_matches_in_order(database: TestDatabase) {
    let in_order = start(&database, Delivery::Push).await;
    let (customers, delivered) = play(&in_order, Order::InOrder).await;
    let expected = final_state(&in_order, &customers).await;
    assert_approved_once(&in_order, &customers);
    let published = in_order.sim.published().len();
    assert!(
        published >= 250,
        "a stream of several hundred notifications ({published})"
    );
    assert_eq!(delivered, published);
    assert_eq!(events_processed(&in_order).await, published);
    in_order.stop().await;

    let shuffled = start(&database, Delivery::Push).await;
    let (customers, delivered) = play(&shuffled, Order::Shuffled).await;
    assert_eq!(shuffled.sim.published().len(), published);
    assert_eq!(delivered, 2 * published, "every notification arrived twice");
    let actual = final_state(&shuffled, &customers).await;
    assert_approved_once(&shuffled, &customers);
    assert_eq!(
        events_processed(&shuffled).await,
        published,
        "duplicates are recorded once"
    );
    assert_eq!(actual, expected);
    shuffled.stop().await;
}

backend_test!(
    google_shuffled_duplicated_stream_ends_like_the_ordered_one,
    |database| async move {
        shuffled_matches_in_order(database).await;
    }
);
