//! The whole Google Cloud Marketplace lifecycle over real HTTP and gRPC, on
//! both databases, through push and through pull: purchase, signup through
//! the HTML form, approvals in the right order, provisioning, a plan change,
//! cancellation and its revert, cancellation, deletion, and the account's
//! deletion with its personal data purged.

use crate::google_support::{Delivery, start};
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_simulators::google::{PRODUCT, state as google_state};
use marketbridge_storage::backend_test;
use marketbridge_storage::testing::TestDatabase;
use provisioning_pb::{ResourceStatus, SubscriptionState};

async fn walk_the_lifecycle(database: TestDatabase, delivery: Delivery) {
    let google = start(&database, delivery).await;
    let sim = &google.sim;

    // Purchase: Google creates the account and the entitlement.
    let purchase = sim.purchase(PRODUCT, "pro-plan");
    google.settle().await;
    let account = google.account(&purchase.account_id).await;
    assert_eq!(account.marketplace_state, "ACCOUNT_ACTIVE");
    assert_eq!(
        account.signup_state,
        account_pb::SignupState::Pending as i32
    );
    assert!(account.marketplace_update_time.is_some());
    let subscription = google
        .subscription(&purchase.entitlement_id)
        .await
        .expect("the entitlement is recorded");
    assert_eq!(subscription.state, SubscriptionState::Requested as i32);
    assert!(subscription.awaiting_account_approval);
    assert_eq!(subscription.product_id, "database");
    assert_eq!(subscription.plan_id, "pro");
    assert!(
        google.accepted_calls(":approve").is_empty(),
        "nothing is approved before the signup"
    );

    // Signup through the HTML form: the account is approved, then the
    // entitlement, and the resource is provisioned.
    google
        .sign_up(
            &purchase.account_id,
            "Ada Lovelace",
            "ada@example.com",
            "Analytical Engines",
        )
        .await;
    google.settle().await;
    let account = google.account(&purchase.account_id).await;
    assert_eq!(
        account.signup_state,
        account_pb::SignupState::Approved as i32
    );
    assert_eq!(account.company, "Analytical Engines");
    assert_eq!(account.contact.as_ref().unwrap().email, "ada@example.com");
    assert_eq!(
        sim.account(&purchase.account_id).unwrap().signup,
        "APPROVED"
    );
    assert_eq!(
        sim.entitlement(&purchase.entitlement_id).unwrap().state,
        google_state::ACTIVE
    );
    let approvals = google.accepted_calls(":approve");
    assert_eq!(
        approvals,
        [
            format!(
                "/v1/providers/{}/accounts/{}:approve",
                sim.provider_id(),
                purchase.account_id
            ),
            format!(
                "/v1/providers/{}/entitlements/{}:approve",
                sim.provider_id(),
                purchase.entitlement_id
            ),
        ],
        "the account first, then the entitlement, each once"
    );
    google.assert_google_refused_nothing();
    let subscription = google.subscription(&purchase.entitlement_id).await.unwrap();
    assert_eq!(subscription.state, SubscriptionState::Active as i32);
    assert!(
        subscription
            .usage_reporting_id
            .starts_with("project_number:")
    );
    assert!(!subscription.order_id.is_empty());
    let resources = google.resources(&account.id).await;
    assert_eq!(resources.len(), 1);
    assert_eq!(resources[0].status, ResourceStatus::Ready as i32);
    assert_eq!(resources[0].plan_id, "pro");

    // Plan change: requested, approved with the pending plan, applied.
    sim.request_plan_change(&purchase.entitlement_id, "free-plan")
        .unwrap();
    google.settle().await;
    let plan_changes = sim.api().recorder.accepted("POST", ":approvePlanChange");
    assert_eq!(plan_changes.len(), 1);
    assert_eq!(plan_changes[0].json()["pendingPlanName"], "free-plan");
    let subscription = google.subscription(&purchase.entitlement_id).await.unwrap();
    assert_eq!(subscription.state, SubscriptionState::Active as i32);
    assert_eq!(subscription.plan_id, "free");
    assert!(subscription.pending_plan_id.is_empty());
    assert_eq!(google.resources(&account.id).await[0].plan_id, "free");

    // Cancellation at the end of the term keeps access, and can be reverted.
    sim.cancel(&purchase.entitlement_id).unwrap();
    google.settle().await;
    assert_eq!(
        google.subscription_state(&purchase.entitlement_id).await,
        SubscriptionState::PendingCancellation
    );
    assert_eq!(
        google.resources(&account.id).await[0].status,
        ResourceStatus::Ready as i32,
        "access stays during the pending cancellation"
    );
    sim.revert_cancellation(&purchase.entitlement_id).unwrap();
    google.settle().await;
    assert_eq!(
        google.subscription_state(&purchase.entitlement_id).await,
        SubscriptionState::Active
    );

    // Cancelled at the end of the term: access ends.
    sim.cancel(&purchase.entitlement_id).unwrap();
    sim.end_term(&purchase.entitlement_id).unwrap();
    google.settle().await;
    assert_eq!(
        google.subscription_state(&purchase.entitlement_id).await,
        SubscriptionState::Cancelled
    );
    assert_eq!(
        google.resources(&account.id).await[0].status,
        ResourceStatus::Uninstalled as i32
    );

    // The entitlement's record is deleted at Google.
    sim.delete_entitlement(&purchase.entitlement_id).unwrap();
    google.settle().await;
    let subscription = google.subscription(&purchase.entitlement_id).await.unwrap();
    assert_eq!(subscription.state, SubscriptionState::Cancelled as i32);
    assert_eq!(
        subscription
            .attributes
            .get("deleted_at_marketplace")
            .map(String::as_str),
        Some("true")
    );

    // The account is deleted: ours is closed and its personal data purged.
    sim.delete_account(&purchase.account_id).unwrap();
    google.settle().await;
    let account = google.account(&purchase.account_id).await;
    assert_eq!(account.state, account_pb::AccountState::Deleted as i32);
    assert!(account.purged);
    assert!(account.contact.is_none());
    assert!(account.company.is_empty());
    assert!(account.people.is_empty());

    // Every notification was recorded once, through the right channel, and
    // processed.
    let events = google
        .test
        .set
        .clients
        .account
        .clone()
        .list_marketplace_events(account_pb::ListMarketplaceEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events.len(), sim.published().len());
    let channel = match delivery {
        Delivery::Push => "pubsub_push",
        Delivery::Pull => "pubsub_pull",
    };
    for event in &events {
        assert_eq!(event.channel, channel);
        assert_eq!(
            event.status,
            account_pb::EventStatus::Processed as i32,
            "{} {}: {}",
            event.event_type,
            event.external_id,
            event.error
        );
    }
    google.assert_google_refused_nothing();
    if delivery == Delivery::Pull {
        assert_eq!(
            sim.unacknowledged_pulls(),
            0,
            "every pulled message was acknowledged"
        );
    }
    google.stop().await;
}

backend_test!(google_lifecycle_through_push, |database| async move {
    walk_the_lifecycle(database, Delivery::Push).await;
});

backend_test!(google_lifecycle_through_pull, |database| async move {
    walk_the_lifecycle(database, Delivery::Pull).await;
});
