//! The read a subscription's billing job makes: the subscription with the
//! ids of its live resources, in one statement, on both backends.

use marketbridge_core::crypto::Cipher;
use marketbridge_core::ids::{AccountId, ResourceId, SubscriptionId};
use marketbridge_provisioning::entity::{resource, subscription};
use marketbridge_provisioning::model::{ResourceStatus, SubscriptionScope, SubscriptionState};
use marketbridge_storage::backend_test;
use marketbridge_storage::sea_orm::{EntityTrait, IntoActiveModel};
use marketbridge_storage::testing::{record_statements, statement_counts, statements_between};

mod support;

fn subscription_row(id: &SubscriptionId, account: &AccountId) -> subscription::Model {
    let now = marketbridge_storage::db::truncate_micros(chrono::Utc::now());
    subscription::Model {
        id: id.to_string(),
        account_id: account.to_string(),
        marketplace: "vercel".into(),
        external_id: format!("ext-{id}"),
        product_id: "database".into(),
        plan_id: "free".into(),
        pending_plan_id: String::new(),
        state: SubscriptionState::Active,
        scope: SubscriptionScope::Account,
        marketplace_state: String::new(),
        marketplace_update_time: None,
        usage_reporting_id: String::new(),
        order_id: String::new(),
        awaiting_account_approval: false,
        reason: String::new(),
        attributes: "{}".into(),
        version: 3,
        created_at: now,
        updated_at: now,
        started_at: Some(now),
        ended_at: None,
    }
}

backend_test!(
    a_subscription_is_read_with_its_live_resources_in_one_statement,
    |database| async move {
        record_statements();
        let cipher = Cipher::from_base64_key(&Cipher::generate_base64_key()).unwrap();
        let server = support::open(database.url(), &cipher, support::default_drivers()).await;
        let domain = server.domain();
        let account = AccountId::generate();
        let (bare, busy) = (SubscriptionId::generate(), SubscriptionId::generate());
        for id in [&bare, &busy] {
            subscription::Entity::insert(subscription_row(id, &account).into_active_model())
                .exec_without_returning(domain.db())
                .await
                .unwrap();
        }
        let mut live = Vec::new();
        for status in [
            ResourceStatus::Ready,
            ResourceStatus::Uninstalled,
            ResourceStatus::Pending,
            ResourceStatus::Ready,
        ] {
            let id = ResourceId::generate();
            let mut row = support::resource_row(&id, &account, status, &cipher);
            row.subscription_id = busy.to_string();
            resource::Entity::insert(row.into_active_model())
                .exec_without_returning(domain.db())
                .await
                .unwrap();
            if status != ResourceStatus::Uninstalled {
                live.push(id.to_string());
            }
        }
        live.sort();

        let before = statement_counts();
        let (row, ids) = domain
            .subscription_with_resource_ids(&busy)
            .await
            .unwrap()
            .expect("the subscription");
        let sent = statements_between(&before, &statement_counts());
        assert_eq!(sent.values().sum::<u64>(), 1, "{sent:#?}");
        assert_eq!(row, subscription_row_as_stored(domain, &busy).await);
        assert_eq!(ids, live, "the live ones, oldest id first");

        let (row, ids) = domain
            .subscription_with_resource_ids(&bare)
            .await
            .unwrap()
            .expect("a subscription without resources");
        assert_eq!(row.id, bare.as_str());
        assert!(ids.is_empty());

        assert!(
            domain
                .subscription_with_resource_ids(&SubscriptionId::generate())
                .await
                .unwrap()
                .is_none()
        );
    }
);

async fn subscription_row_as_stored(
    domain: &marketbridge_provisioning::domain::ProvisioningDomain,
    id: &SubscriptionId,
) -> subscription::Model {
    subscription::Entity::find_by_id(id.to_string())
        .one(domain.db())
        .await
        .unwrap()
        .unwrap()
}
