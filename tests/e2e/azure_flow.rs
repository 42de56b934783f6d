//! Azure Marketplace end to end on both databases: purchase → landing page
//! → signup → activated at Microsoft → usage metered once per hour across a
//! metering outage and a restart → seat and plan changes decided through
//! the operations API → suspension and reinstatement → cancellation with
//! the final usage. Plus the refusals: forged, expired and unsigned webhook
//! calls, replays, bad landing tokens, and duplicated, shuffled calls that
//! end in the in-order state.

use crate::azure_support::{AzureTest, assert_all_taken, start};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use marketbridge_core::time::Clock;
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::common::v1::Marketplace;
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_simulators::azure::DeliveryPlan;
use marketbridge_storage::backend_test;
use serde_json::json;

fn at(text: &str) -> DateTime<Utc> {
    marketbridge_core::time::parse_rfc3339("at", text).expect("a time")
}

fn clock_to(azure: &AzureTest, to: DateTime<Utc>) {
    let now = azure.clock.now();
    assert!(to >= now, "time only moves forward");
    azure.clock.advance(to - now);
}

async fn record(azure: &AzureTest, subscription_id: &str, events: &[(&str, &str, i64, &str)]) {
    crate::support::record_usage(&azure.test.set, subscription_id, events).await;
}

async fn bill(azure: &AzureTest) {
    azure.test.run_billing().await;
    azure.test.drain().await;
}

/// Accepted usage as (hour, dimension, quantity), in arrival order.
fn metered(azure: &AzureTest) -> Vec<(String, String, f64)> {
    azure
        .sim
        .usage()
        .into_iter()
        .map(|u| (u.hour.format("%H:%M").to_string(), u.dimension, u.quantity))
        .collect()
}

fn resource_statuses(
    resources: &[provisioning_pb::Resource],
) -> Vec<provisioning_pb::ResourceStatus> {
    resources
        .iter()
        .map(|r| provisioning_pb::ResourceStatus::try_from(r.status).unwrap_or_default())
        .collect()
}

backend_test!(
    a_purchase_runs_from_the_landing_page_to_the_final_usage,
    |database| async move {
        let azure = start(&database).await;
        let id = azure.buy_and_sign_up("database-pro", Some(2)).await;

        // Activated at Microsoft with the purchased plan, once.
        let at_microsoft = azure.sim.subscription(&id).unwrap();
        assert_eq!(at_microsoft.status, "Subscribed");
        assert_eq!(at_microsoft.activations, 1);
        assert_eq!(
            azure.subscription_state(&id).await,
            provisioning_pb::SubscriptionState::Active
        );
        let subscription = azure.subscription(&id).await.unwrap();
        assert_eq!(subscription.plan_id, "pro");
        assert_eq!(subscription.usage_reporting_id, id);
        let account = azure.account(&id).await;
        assert_eq!(
            account.signup_state,
            account_pb::SignupState::Approved as i32
        );
        let resources = azure.resources(&account.id).await;
        assert_eq!(resources.len(), 1, "the subscription got its resource");

        // Usage of the first hour goes out once, as one event per dimension.
        clock_to(&azure, at("2026-11-23T13:00:00Z"));
        record(
            &azure,
            &subscription.id,
            &[
                ("u1", "requests", 5, "2026-11-23T12:10:00Z"),
                ("u2", "requests", 7, "2026-11-23T12:50:00Z"),
            ],
        )
        .await;
        clock_to(&azure, at("2026-11-23T13:20:00Z"));
        bill(&azure).await;
        assert_eq!(metered(&azure), [("12:00".into(), "requests".into(), 12.0)]);

        // Metering is down for the next hour; the process restarts; the
        // hour goes out once when it is back.
        record(
            &azure,
            &subscription.id,
            &[("u3", "requests", 3, "2026-11-23T13:10:00Z")],
        )
        .await;
        azure.sim.set_metering_outage(true);
        clock_to(&azure, at("2026-11-23T14:20:00Z"));
        bill(&azure).await;
        assert_eq!(metered(&azure).len(), 1, "nothing taken while down");
        let azure = azure.restart().await;
        azure.sim.set_metering_outage(false);
        azure.clock.advance(ChronoDuration::seconds(5));
        azure.test.drain().await;
        bill(&azure).await;
        assert_eq!(
            metered(&azure),
            [
                ("12:00".into(), "requests".into(), 12.0),
                ("13:00".into(), "requests".into(), 3.0)
            ]
        );
        bill(&azure).await;
        assert_eq!(metered(&azure).len(), 2, "each hour exactly once");

        // The customer adds seats: accepted through the operations API.
        let op = azure.sim.change_quantity(&id, 5).unwrap();
        azure.settle().await;
        assert_eq!(azure.sim.operation(&op).unwrap().status, "Succeeded");
        assert_eq!(
            azure.sim.operation(&op).unwrap().decision.as_deref(),
            Some("Success")
        );
        assert_eq!(azure.sim.subscription(&id).unwrap().quantity, Some(5));
        let subscription = azure.subscription(&id).await.unwrap();
        assert_eq!(
            subscription
                .attributes
                .get("azure_quantity")
                .map(String::as_str),
            Some("5")
        );

        // A plan the catalog does not offer is refused; one it does is taken.
        let op = azure.sim.change_plan(&id, "database-enterprise").unwrap();
        azure.settle().await;
        assert_eq!(azure.sim.operation(&op).unwrap().status, "Failed");
        assert_eq!(azure.sim.subscription(&id).unwrap().plan_id, "database-pro");
        let op = azure.sim.change_plan(&id, "database-free").unwrap();
        azure.settle().await;
        assert_eq!(azure.sim.operation(&op).unwrap().status, "Succeeded");
        assert_eq!(azure.subscription(&id).await.unwrap().plan_id, "free");

        // Suspension suspends the resource; reinstatement brings it back.
        azure.sim.suspend(&id).unwrap();
        azure.settle().await;
        assert_eq!(
            resource_statuses(&azure.resources(&account.id).await),
            [provisioning_pb::ResourceStatus::Suspended]
        );
        azure.sim.reinstate(&id).unwrap();
        azure.settle().await;
        assert_ne!(
            resource_statuses(&azure.resources(&account.id).await),
            [provisioning_pb::ResourceStatus::Suspended]
        );

        // Cancelled at 15:40: the usage up to there goes out at once.
        clock_to(&azure, at("2026-11-23T15:20:00Z"));
        bill(&azure).await;
        record(
            &azure,
            &subscription.id,
            &[("u4", "requests", 4, "2026-11-23T15:10:00Z")],
        )
        .await;
        clock_to(&azure, at("2026-11-23T15:40:00Z"));
        azure.sim.unsubscribe(&id).unwrap();
        azure.settle().await;
        assert_eq!(
            azure.subscription_state(&id).await,
            provisioning_pb::SubscriptionState::Cancelled
        );
        assert_eq!(
            metered(&azure).last().cloned(),
            Some(("15:00".into(), "requests".into(), 4.0)),
            "the final usage went out with the cancellation"
        );
        clock_to(&azure, at("2026-11-23T18:00:00Z"));
        bill(&azure).await;
        let hours: Vec<String> = metered(&azure).into_iter().map(|m| m.0).collect();
        let mut unique = hours.clone();
        unique.dedup();
        assert_eq!(hours, unique, "no hour twice: {hours:?}");
        assert!(
            azure.sim.webhook_attempts().iter().all(|a| a.status == 200),
            "every webhook call was taken"
        );
        azure.stop().await;
    }
);

backend_test!(
    forged_expired_unsigned_and_replayed_webhooks_change_nothing,
    |database| async move {
        let azure = start(&database).await;
        let id = azure.buy_and_sign_up("database-free", None).await;
        let op = azure.sim.suspend(&id).unwrap();
        let webhook = azure.test.url(&azure.test.set.config.azure.webhook_path);
        let body =
            json!({"id": op, "subscriptionId": id, "action": "Suspend", "status": "Succeeded"});
        let post = |token: Option<String>| {
            let mut request = azure.test.http.post(&webhook).json(&body);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            request.send()
        };
        let mut claims = azure.sim.webhook_claims();
        claims["exp"] = json!(azure.clock.now().timestamp() - 300);
        let expired = azure.sim.sign_webhook_claims(&claims);
        let mut claims = azure.sim.webhook_claims();
        claims["appid"] = json!("11111111-2222-3333-4444-555555555555");
        let other_app = azure.sim.sign_webhook_claims(&claims);
        let stranger = marketbridge_simulators::common::SigningKey::generate("stranger")
            .sign(&azure.sim.webhook_claims());
        for (token, what) in [
            (None, "unsigned"),
            (Some(expired), "expired"),
            (Some(other_app), "another app"),
            (Some(stranger), "forged"),
            (Some("not.a.jwt".to_owned()), "garbage"),
        ] {
            let response = post(token).await.unwrap();
            assert_eq!(response.status().as_u16(), 401, "{what}");
        }
        let events = azure
            .test
            .set
            .clients
            .account
            .clone()
            .list_marketplace_events(account_pb::ListMarketplaceEventsRequest {
                marketplace: Marketplace::Azure as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            events.events.iter().all(|e| e.event_type != "Suspend"),
            "no refused call was recorded"
        );

        // The genuine call, delivered twice: recorded once, acted on once.
        let first = azure.sim.deliver_webhooks().await;
        assert_all_taken(&first);
        let replay = azure
            .sim
            .call_webhook_with(
                &op,
                Some(azure.sim.sign_webhook_claims(&azure.sim.webhook_claims())),
            )
            .await;
        assert_eq!(replay.status, 200, "a replay is acknowledged");
        azure.settle().await;
        let account = azure.account(&id).await;
        let resources = azure.resources(&account.id).await;
        assert_eq!(
            resource_statuses(&resources),
            [provisioning_pb::ResourceStatus::Suspended]
        );

        // A landing link Microsoft does not know, or mangled.
        let landing = azure.test.url(&azure.test.set.config.azure.landing_path);
        for query in ["?token=bogus", "?token=%ZZ", "?token="] {
            let (status, _, page) = azure.open_landing(&format!("{landing}{query}")).await;
            assert_eq!(status, 401, "{query}: {page}");
        }
        let purchase = azure.sim.purchase("database-free", None);
        let mangled = format!("{landing}?token={}", purchase.token.replace('+', "%20"));
        let (status, _, _) = azure.open_landing(&mangled).await;
        assert_eq!(status, 401, "a + turned into a space is another token");
        azure.stop().await;
    }
);

backend_test!(
    duplicated_and_shuffled_webhooks_end_in_the_in_order_state,
    |database| async move {
        let azure = start(&database).await;
        let id = azure.buy_and_sign_up("database-pro", Some(1)).await;
        azure.sim.suspend(&id).unwrap();
        azure.sim.reinstate(&id).unwrap();
        azure.sim.renew(&id).unwrap();
        for seed in [7, 11] {
            let attempts = azure
                .sim
                .deliver_webhooks_with(DeliveryPlan {
                    duplicate: true,
                    shuffle_seed: Some(seed),
                })
                .await;
            assert_all_taken(&attempts);
            azure.test.drain().await;
            if seed == 7 {
                // Deliver the same three again in another order.
                for op in azure
                    .sim
                    .webhook_attempts()
                    .iter()
                    .map(|a| a.operation_id.clone())
                    .collect::<std::collections::BTreeSet<_>>()
                {
                    azure
                        .sim
                        .call_webhook_with(
                            &op,
                            Some(azure.sim.sign_webhook_claims(&azure.sim.webhook_claims())),
                        )
                        .await;
                }
            }
        }
        azure.settle().await;
        let account = azure.account(&id).await;
        assert_eq!(azure.sim.subscription(&id).unwrap().status, "Subscribed");
        assert_eq!(
            azure.subscription_state(&id).await,
            provisioning_pb::SubscriptionState::Active
        );
        assert_eq!(
            resource_statuses(&azure.resources(&account.id).await),
            [provisioning_pb::ResourceStatus::Ready]
        );

        // A change we let pass Microsoft's ten seconds is accepted on its
        // own; our late decision finds it settled and we follow it.
        let op = azure.sim.change_quantity(&id, 4).unwrap();
        assert_all_taken(&azure.sim.deliver_webhooks().await);
        azure.clock.advance(ChronoDuration::seconds(11));
        assert_eq!(
            azure.sim.settle_waiting_operations(false),
            std::slice::from_ref(&op)
        );
        azure.settle().await;
        let subscription = azure.subscription(&id).await.unwrap();
        assert_eq!(
            subscription
                .attributes
                .get("azure_quantity")
                .map(String::as_str),
            Some("4")
        );
        assert_eq!(azure.sim.operation(&op).unwrap().decision, None);
        azure.stop().await;
    }
);

backend_test!(
    a_lost_webhook_call_is_repaired_by_reconciliation,
    |database| async move {
        let azure = start(&database).await;
        let id = azure.buy_and_sign_up("database-free", None).await;
        // Microsoft cancels, but its webhook call never arrives.
        let now = azure.clock.now();
        azure
            .sim
            .with_world(|world| world.inform(&id, "Unsubscribe", "Azure", now))
            .unwrap();
        assert_eq!(azure.sim.held_webhooks(), 0);
        assert_eq!(
            azure.subscription_state(&id).await,
            provisioning_pb::SubscriptionState::Active
        );
        let reconciled = azure
            .test
            .set
            .account
            .run_marketplace_work("azure.reconcile")
            .await
            .expect("reconciliation runs");
        assert_eq!(reconciled, 1);
        azure.settle().await;
        assert_eq!(
            azure.subscription_state(&id).await,
            provisioning_pb::SubscriptionState::Cancelled
        );
        assert_eq!(azure.account(&id).await.marketplace_state, "Unsubscribed");
        azure.stop().await;
    }
);
