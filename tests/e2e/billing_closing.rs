//! Closing an account's billing while provisioning's news is still on its way,
//! and plans reserved for some accounts.

use crate::support::set_on;
use crate::vercel_support::{VercelOptions, installation_path, vercel_set};
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_proto::common::v1::{Marketplace, MarketplaceRef};
use marketbridge_storage::backend_test;
use serde_json::json;

backend_test!(
    an_uninstall_before_billing_heard_of_a_paid_plan_is_not_final,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::manual()).await;
        let (installation, admin) = vercel.install().await;
        vercel
        .provision(
            &installation,
            &admin,
            json!({"productId": "database", "name": "paid", "metadata": {"region": "iad1"}, "billingPlanId": "pro"}),
        )
        .await;
        // No outbox has run: billing has not heard of the subscription yet.
        let answer = vercel
            .partner
            .delete(&installation_path(&installation))
            .user(&admin)
            .json(&json!({"cascadeResourceDeletion": true}))
            .send()
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(
            answer.body,
            json!({"finalized": false}),
            "billing must not claim to be final"
        );
        vercel.stop().await;
    }
);

backend_test!(
    plans_reserved_for_an_account_are_offered_to_it_only,
    |database| async move {
        let catalog = format!(
            "{}\n{}",
            marketbridge_catalog::BUILTIN_CATALOG,
            r#"
[[products]]
id = "enterprise"
name = "Enterprise"
  [products.template.secrets]
  API_KEY = "{password}"
  [[products.plans]]
  id = "standard"
  name = "Standard"
  price = "100.00"
  [[products.plans]]
  id = "negotiated"
  name = "Negotiated"
  price = "80.00"
  only_for_accounts = ["team-vip"]
"#
        );
        let path =
            std::env::temp_dir().join(format!("catalog-{}.toml", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, catalog).unwrap();
        let catalog_path = path.display().to_string();
        let test = set_on(&database)
            .configure(move |config| config.catalog.path = catalog_path)
            .start()
            .await;
        let mut accounts = test.set.clients.account.clone();
        let mut ids = Vec::new();
        for team in ["team-vip", "team-other"] {
            let account = accounts
                .upsert_account(account_pb::UpsertAccountRequest {
                    marketplace_ref: Some(MarketplaceRef::new(Marketplace::Direct, team)),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            ids.push(account.id);
        }
        let mut billing = test.set.clients.billing.clone();
        let plans_for = |account_id: &str| billing_pb::ListPlansRequest {
            product_id: "enterprise".into(),
            account_id: account_id.to_owned(),
            ..Default::default()
        };
        let names = |plans: billing_pb::ListPlansResponse| {
            plans.plans.into_iter().map(|p| p.id).collect::<Vec<_>>()
        };
        assert_eq!(
            names(
                billing
                    .list_plans(plans_for(&ids[0]))
                    .await
                    .unwrap()
                    .into_inner()
            ),
            ["standard", "negotiated"]
        );
        assert_eq!(
            names(
                billing
                    .list_plans(plans_for(&ids[1]))
                    .await
                    .unwrap()
                    .into_inner()
            ),
            ["standard"]
        );
        assert_eq!(
            names(
                billing
                    .list_plans(plans_for(""))
                    .await
                    .unwrap()
                    .into_inner()
            ),
            ["standard"]
        );
        let _ = std::fs::remove_file(path);
        test.stop().await;
    }
);
