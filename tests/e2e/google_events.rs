//! Every notification type of the Marketplace catalogue handled as the
//! contract says (the deprecated account event, untyped account messages,
//! several orders per account, private offers with automatic approval,
//! renewals, ended offers, withdrawn, refused and end-of-cycle plan changes,
//! immediate cancellations, provider rejections, unknown types), lost
//! notifications repaired by reconciliation, Google failures retried, and
//! signups rejected, approved after all, and reset.

use crate::google_support::{Delivery, GoogleTest, start};
use chrono::Duration as ChronoDuration;
use marketbridge_core::Marketplace as CoreMarketplace;
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_simulators::common::Fault;
use marketbridge_simulators::google::{PRODUCT, PlanChangeTiming, state as google_state};
use marketbridge_storage::backend_test;
use provisioning_pb::{ResourceStatus, SubscriptionState};
use serde_json::json;

async fn events_of_type(
    google: &GoogleTest,
    event_type: &str,
) -> Vec<account_pb::MarketplaceEvent> {
    google
        .test
        .set
        .clients
        .account
        .clone()
        .list_marketplace_events(account_pb::ListMarketplaceEventsRequest {
            event_type: event_type.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
}

fn processed(events: &[account_pb::MarketplaceEvent]) -> bool {
    !events.is_empty()
        && events
            .iter()
            .all(|e| e.status == account_pb::EventStatus::Processed as i32)
}

backend_test!(
    google_every_notification_type_is_handled,
    |database| async move {
        let google = start(&database, Delivery::Push).await;
        let sim = &google.sim;

        // The deprecated account event creates the account like ACCOUNT_ACTIVE.
        sim.configure_world(|world| world.legacy_account_events = true);
        let first = sim.purchase(PRODUCT, "pro-plan");
        google.settle().await;
        assert!(processed(
            &events_of_type(&google, "ACCOUNT_CREATION_REQUESTED").await
        ));
        assert_eq!(
            google.account(&first.account_id).await.signup_state,
            account_pb::SignupState::Pending as i32
        );

        // An account message without eventType is read as ACCOUNT_ACTIVE.
        sim.configure_world(|world| {
            world.legacy_account_events = false;
            world.untyped_account_events = true;
        });
        let second = sim.purchase(PRODUCT, "free-plan");
        google.settle().await;
        assert_eq!(
            google.account(&second.account_id).await.marketplace_state,
            "ACCOUNT_ACTIVE"
        );
        sim.configure_world(|world| world.untyped_account_events = false);

        // Signup, then a second order of the same account: approved at once,
        // provisioned separately (keyed by entitlement).
        google
            .sign_up(&first.account_id, "Ada", "ada@example.com", "Engines")
            .await;
        google.settle().await;
        let other_order = sim.purchase_for(&first.account_id, PRODUCT, "free-plan");
        google.settle().await;
        assert_eq!(
            google.subscription_state(&first.entitlement_id).await,
            SubscriptionState::Active
        );
        assert_eq!(
            google.subscription_state(&other_order.entitlement_id).await,
            SubscriptionState::Active
        );
        let account = google.account(&first.account_id).await;
        let live: Vec<_> = google
            .resources(&account.id)
            .await
            .into_iter()
            .filter(|r| r.status == ResourceStatus::Ready as i32)
            .collect();
        assert_eq!(live.len(), 2, "one resource per order");

        // A private offer with automatic approval: no approval call; it becomes
        // active at its start.
        let start_at = google.clock_now() + ChronoDuration::days(1);
        let offer =
            sim.accept_private_offer(Some(&first.account_id), PRODUCT, "pro-plan", Some(start_at));
        google.settle().await;
        assert_eq!(
            google.subscription_state(&offer.entitlement_id).await,
            SubscriptionState::Approved
        );
        assert!(
            google
                .accepted_calls(&format!("{}:approve", offer.entitlement_id))
                .is_empty()
        );
        google.clock.advance(ChronoDuration::days(1));
        assert_eq!(
            sim.start_due_offers(),
            std::slice::from_ref(&offer.entitlement_id)
        );
        google.settle().await;
        assert_eq!(
            google.subscription_state(&offer.entitlement_id).await,
            SubscriptionState::Active
        );
        assert!(processed(
            &events_of_type(&google, "ENTITLEMENT_OFFER_ACCEPTED").await
        ));

        // Renewal and the end of an offer change nothing about access.
        sim.renew(&first.entitlement_id).unwrap();
        sim.end_offer(&offer.entitlement_id).unwrap();
        google.settle().await;
        assert!(processed(
            &events_of_type(&google, "ENTITLEMENT_RENEWED").await
        ));
        assert!(processed(
            &events_of_type(&google, "ENTITLEMENT_OFFER_ENDED").await
        ));
        assert_eq!(
            google.subscription_state(&offer.entitlement_id).await,
            SubscriptionState::Active
        );

        // A plan change withdrawn before we saw it: nothing to approve.
        sim.request_plan_change(&first.entitlement_id, "free-plan")
            .unwrap();
        sim.withdraw_plan_change(&first.entitlement_id).unwrap();
        google.settle().await;
        assert!(
            sim.api()
                .recorder
                .calls_to("POST", ":approvePlanChange")
                .is_empty()
        );
        assert_eq!(
            google
                .subscription(&first.entitlement_id)
                .await
                .unwrap()
                .plan_id,
            "pro"
        );
        assert!(processed(
            &events_of_type(&google, "ENTITLEMENT_PLAN_CHANGE_CANCELLED").await
        ));

        // A plan we do not offer: the change is rejected with a reason.
        sim.request_plan_change(&first.entitlement_id, "enterprise-plan")
            .unwrap();
        google.settle().await;
        let rejected = sim.api().recorder.accepted("POST", ":rejectPlanChange");
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].json()["pendingPlanName"], "enterprise-plan");
        assert!(
            rejected[0].json()["reason"]
                .as_str()
                .unwrap()
                .contains("not offered")
        );
        let subscription = google.subscription(&first.entitlement_id).await.unwrap();
        assert_eq!(subscription.plan_id, "pro");
        assert_eq!(subscription.state, SubscriptionState::Active as i32);

        // A change that waits for the end of the billing cycle.
        sim.configure_world(|world| world.plan_change_timing = PlanChangeTiming::EndOfCycle);
        sim.request_plan_change(&first.entitlement_id, "free-plan")
            .unwrap();
        google.settle().await;
        assert_eq!(
            sim.entitlement(&first.entitlement_id).unwrap().state,
            google_state::PENDING_PLAN_CHANGE
        );
        let waiting = google.subscription(&first.entitlement_id).await.unwrap();
        assert_eq!(waiting.state, SubscriptionState::PendingPlanChange as i32);
        assert_eq!(
            (waiting.plan_id.as_str(), waiting.pending_plan_id.as_str()),
            ("pro", "free")
        );
        sim.end_billing_cycle(&first.entitlement_id).unwrap();
        google.settle().await;
        let changed = google.subscription(&first.entitlement_id).await.unwrap();
        assert_eq!(changed.state, SubscriptionState::Active as i32);
        assert_eq!(changed.plan_id, "free");

        // An immediate cancellation (CANCELLING, then CANCELLED).
        sim.cancel_immediately(&other_order.entitlement_id, "billing-disabled")
            .unwrap();
        google.settle().await;
        let cancelled = google
            .subscription(&other_order.entitlement_id)
            .await
            .unwrap();
        assert_eq!(cancelled.state, SubscriptionState::Cancelled as i32);
        assert_eq!(cancelled.reason, "billing-disabled");
        assert!(processed(
            &events_of_type(&google, "ENTITLEMENT_CANCELLING").await
        ));

        // A plan we do not offer at purchase: the entitlement is rejected.
        let refused = sim.purchase_for(&first.account_id, PRODUCT, "mystery-plan");
        google.settle().await;
        let rejection = sim
            .api()
            .recorder
            .accepted("POST", &format!("{}:reject", refused.entitlement_id));
        assert_eq!(rejection.len(), 1);
        assert!(
            rejection[0].json()["reason"]
                .as_str()
                .unwrap()
                .contains("mystery-plan")
        );
        assert!(sim.entitlement(&refused.entitlement_id).is_none());
        assert_eq!(
            google.subscription_state(&refused.entitlement_id).await,
            SubscriptionState::Rejected
        );

        // Unknown types and other providers' messages are acknowledged and
        // ignored.
        sim.publish_raw(
            json!({"eventId": "NEW-1", "eventType": "ENTITLEMENT_SOMETHING_NEW",
        "providerId": sim.provider_id(), "entitlement": {"id": first.entitlement_id}}),
        );
        sim.publish_raw(json!({"eventId": "OTHER-1", "eventType": "ACCOUNT_ACTIVE",
        "providerId": "SOMEONE-ELSE", "account": {"id": "acct-of-someone-else"}}));
        google.settle().await;
        for event_type in ["ENTITLEMENT_SOMETHING_NEW", "ACCOUNT_ACTIVE"] {
            let ignored = events_of_type(&google, event_type)
                .await
                .into_iter()
                .filter(|e| e.external_id == "NEW-1" || e.external_id == "OTHER-1")
                .collect::<Vec<_>>();
            assert_eq!(ignored.len(), 1, "{event_type}");
            assert_eq!(ignored[0].status, account_pb::EventStatus::Ignored as i32);
        }
        google.assert_google_refused_nothing();
        google.stop().await;
    }
);

backend_test!(
    google_reconciliation_repairs_lost_notifications,
    |database| async move {
        let google = start(&database, Delivery::Push).await;
        let sim = &google.sim;
        let reconcile = || async {
            google
                .test
                .set
                .account
                .run_marketplace_work("google.reconcile_accounts")
                .await
                .unwrap();
            google
                .test
                .set
                .provisioning
                .domain()
                .reconcile(CoreMarketplace::Google)
                .await
                .unwrap();
            google.test.drain().await;
        };

        let purchase = sim.purchase(PRODUCT, "pro-plan");
        assert_eq!(sim.drop_pending_pushes(), 2, "both notifications are lost");
        reconcile().await;
        assert_eq!(
            google.account(&purchase.account_id).await.signup_state,
            account_pb::SignupState::Pending as i32
        );
        let subscription = google.subscription(&purchase.entitlement_id).await.unwrap();
        assert_eq!(subscription.state, SubscriptionState::Requested as i32);
        assert!(subscription.awaiting_account_approval);

        google
            .sign_up(&purchase.account_id, "Ada", "ada@example.com", "Engines")
            .await;
        google.test.drain().await;
        assert_eq!(
            sim.entitlement(&purchase.entitlement_id).unwrap().state,
            google_state::ACTIVE
        );
        sim.drop_pending_pushes();
        reconcile().await;
        assert_eq!(
            google.subscription_state(&purchase.entitlement_id).await,
            SubscriptionState::Active
        );
        let account = google.account(&purchase.account_id).await;
        assert_eq!(
            account.signup_state,
            account_pb::SignupState::Approved as i32
        );
        assert_eq!(google.resources(&account.id).await.len(), 1);

        sim.cancel(&purchase.entitlement_id).unwrap();
        sim.end_term(&purchase.entitlement_id).unwrap();
        sim.drop_pending_pushes();
        reconcile().await;
        assert_eq!(
            google.subscription_state(&purchase.entitlement_id).await,
            SubscriptionState::Cancelled
        );

        sim.delete_account(&purchase.account_id).unwrap();
        sim.drop_pending_pushes();
        reconcile().await;
        let account = google.account(&purchase.account_id).await;
        assert_eq!(account.state, account_pb::AccountState::Deleted as i32);
        assert!(account.purged);
        google.assert_google_refused_nothing();
        google.stop().await;
    }
);

backend_test!(google_failures_are_retried, |database| async move {
    let google = start(&database, Delivery::Push).await;
    let sim = &google.sim;
    let purchase = sim.purchase(PRODUCT, "pro-plan");
    google.settle().await;

    // Google fails the account approval once: the outbox retries it.
    sim.api()
        .faults
        .inject(Fault::status(":approve", 503, 1).method("POST"));
    google
        .sign_up(&purchase.account_id, "Ada", "ada@example.com", "Engines")
        .await;
    google.settle().await;
    assert_eq!(
        google.account(&purchase.account_id).await.signup_state,
        account_pb::SignupState::Approving as i32
    );
    google.clock.advance(ChronoDuration::seconds(5));
    google.settle().await;
    assert_eq!(
        google.account(&purchase.account_id).await.signup_state,
        account_pb::SignupState::Approved as i32
    );
    assert_eq!(
        google.subscription_state(&purchase.entitlement_id).await,
        SubscriptionState::Active
    );

    // Reads fail while a notification is processed: it is retried, and a
    // slow answer is only slow.
    sim.api()
        .faults
        .inject(Fault::status("/entitlements/", 500, 2).method("GET"));
    sim.api().faults.inject(Fault::slow(
        "/entitlements/",
        std::time::Duration::from_millis(300),
        1,
    ));
    sim.cancel(&purchase.entitlement_id).unwrap();
    google.settle().await;
    for _ in 0..3 {
        google.clock.advance(ChronoDuration::seconds(5));
        google.settle().await;
    }
    assert_eq!(
        google.subscription_state(&purchase.entitlement_id).await,
        SubscriptionState::PendingCancellation
    );
    assert!(processed(
        &events_of_type(&google, "ENTITLEMENT_PENDING_CANCELLATION").await
    ));
    let failed_reads = sim
        .api()
        .recorder
        .calls_to("GET", "/entitlements/")
        .into_iter()
        .filter(|c| c.status == 500)
        .count();
    assert_eq!(failed_reads, 2);

    // While the push endpoint cannot be reached, Pub/Sub keeps the message
    // and delivers it once it can.
    sim.revert_cancellation(&purchase.entitlement_id).unwrap();
    sim.set_push_endpoint(
        "http://127.0.0.1:9/unreachable",
        marketbridge_simulators::google::PUSH_AUDIENCE,
    );
    let failed = sim.deliver_pushes().await;
    assert!(!failed.is_empty() && failed.iter().all(|a| !a.acknowledged()));
    assert_eq!(sim.pending_pushes(), failed.len());
    sim.set_push_endpoint(
        &google.test.url(&google.test.set.config.google.push_path),
        marketbridge_simulators::google::PUSH_AUDIENCE,
    );
    google.settle().await;
    assert_eq!(
        google.subscription_state(&purchase.entitlement_id).await,
        SubscriptionState::Active
    );
    assert_eq!(sim.pending_pushes(), 0);
    google.stop().await;
});

backend_test!(
    google_signups_can_be_rejected_reapproved_and_reset,
    |database| async move {
        let google = start(&database, Delivery::Push).await;
        let sim = &google.sim;
        let purchase = sim.purchase(PRODUCT, "pro-plan");
        google.settle().await;
        let mut accounts = google.test.set.clients.account.clone();
        let selector = || {
            Some(marketbridge_proto::common::v1::AccountSelector::by_ref(
                marketbridge_proto::common::v1::Marketplace::Google,
                purchase.account_id.clone(),
            ))
        };

        // The provider rejects the signup: Google records the reason.
        accounts
            .reject_signup(account_pb::RejectSignupRequest {
                context: None,
                account: selector(),
                reason: "we could not verify the company".into(),
            })
            .await
            .unwrap();
        google.settle().await;
        let at_google = sim.account(&purchase.account_id).unwrap();
        assert_eq!(at_google.signup, "REJECTED");
        assert_eq!(at_google.signup_reason, "we could not verify the company");
        assert_eq!(
            google.subscription_state(&purchase.entitlement_id).await,
            SubscriptionState::Requested
        );

        // A rejected signup can still be approved later.
        google
            .sign_up(&purchase.account_id, "Ada", "ada@example.com", "Engines")
            .await;
        google.settle().await;
        assert_eq!(
            sim.account(&purchase.account_id).unwrap().signup,
            "APPROVED"
        );
        assert_eq!(
            google.subscription_state(&purchase.entitlement_id).await,
            SubscriptionState::Active
        );

        // A reset (a test tool at Google) sends no notification; refreshing the
        // account and reconciling show what happened.
        accounts
            .reset_account(account_pb::ResetAccountRequest {
                context: None,
                account: selector(),
            })
            .await
            .unwrap();
        google.settle().await;
        assert_eq!(sim.account(&purchase.account_id).unwrap().signup, "PENDING");
        assert_eq!(sim.pending_pushes(), 0, "no notification after a reset");
        let refreshed = accounts
            .refresh_account(account_pb::RefreshAccountRequest {
                account: selector(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            refreshed.signup_state,
            account_pb::SignupState::Pending as i32
        );
        google
            .test
            .set
            .provisioning
            .domain()
            .reconcile(CoreMarketplace::Google)
            .await
            .unwrap();
        google.test.drain().await;
        assert_eq!(
            google.subscription_state(&purchase.entitlement_id).await,
            SubscriptionState::Cancelled
        );
        assert_eq!(
            sim.api().recorder.accepted("POST", ":reset").len(),
            1,
            "one reset call"
        );
        google.assert_google_refused_nothing();
        google.stop().await;
    }
);

backend_test!(
    google_an_account_found_gone_on_refresh_ends_everything,
    |database| async move {
        let google = start(&database, Delivery::Push).await;
        let sim = &google.sim;
        let purchase = sim.purchase(PRODUCT, "pro-plan");
        google.settle().await;
        google
            .sign_up(&purchase.account_id, "Ada", "ada@example.com", "Engines")
            .await;
        google.settle().await;
        let account = google.account(&purchase.account_id).await;
        assert_eq!(
            google.subscription_state(&purchase.entitlement_id).await,
            SubscriptionState::Active
        );
        let resources = google.resources(&account.id).await;
        assert_eq!(resources.len(), 1);
        assert_eq!(resources[0].status, ResourceStatus::Ready as i32);

        // Google closes the account and every notification about it is lost:
        // only a refresh finds out. The account is deleted and purged, and
        // its entitlement and resource end with it.
        sim.delete_account(&purchase.account_id).unwrap();
        assert!(sim.drop_pending_pushes() >= 2);
        let refreshed = google
            .test
            .set
            .clients
            .account
            .clone()
            .refresh_account(account_pb::RefreshAccountRequest {
                account: Some(marketbridge_proto::common::v1::AccountSelector::by_id(
                    &account.id,
                )),
            })
            .await
            .expect("refresh")
            .into_inner();
        assert_eq!(refreshed.state, account_pb::AccountState::Deleted as i32);
        assert!(refreshed.purged);
        google.test.drain().await;
        assert_eq!(
            google.subscription_state(&purchase.entitlement_id).await,
            SubscriptionState::Cancelled
        );
        let resources = google.resources(&account.id).await;
        assert_eq!(resources.len(), 1);
        assert_eq!(
            resources[0].status,
            ResourceStatus::Uninstalled as i32,
            "{resources:?}"
        );
        google.assert_google_refused_nothing();
        google.stop().await;
    }
);
