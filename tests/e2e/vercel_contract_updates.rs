//! Vercel contract updates: an installation-level plan named on Provision
//! Resource.

use crate::vercel_support::{VercelOptions, installation_path, provision_body, vercel_set};
use marketbridge_proto::common::v1::Marketplace;
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_storage::backend_test;
use serde_json::json;

backend_test!(
    an_installation_plan_on_provision_becomes_the_installation_plan,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::default()).await;
        let (installation, admin) = vercel.install().await;

        // A resource plan gives the resource its own subscription and
        // leaves the installation without a plan.
        let standard = vercel
            .provision(
                &installation,
                &admin,
                provision_body("cache", "standard", "own-plan", json!({})),
            )
            .await;
        assert_eq!(standard["billingPlan"]["id"], "standard");
        let read = vercel
            .partner
            .get(&installation_path(&installation))
            .user(&admin)
            .send()
            .await;
        assert_eq!(read.status, 200, "{}", read.text);
        assert!(read.body.get("billingPlan").is_none(), "{}", read.text);

        // An installation plan puts the installation on it; the resource
        // joins that plan and answers with it.
        let joined = vercel
            .provision(
                &installation,
                &admin,
                provision_body("cache", "team", "team-cache", json!({})),
            )
            .await;
        assert_eq!(joined["billingPlan"]["id"], "team");
        assert_eq!(joined["billingPlan"]["scope"], "installation");
        let read = vercel
            .partner
            .get(&installation_path(&installation))
            .user(&admin)
            .send()
            .await;
        assert_eq!(read.status, 200, "{}", read.text);
        assert_eq!(read.body["billingPlan"]["id"], "team");

        let mut provisioning = vercel.test.set.clients.provisioning.clone();
        let subscription = provisioning
            .get_subscription(provisioning_pb::GetSubscriptionRequest {
                selector: Some(
                    provisioning_pb::get_subscription_request::Selector::MarketplaceRef(
                        marketbridge_proto::common::v1::MarketplaceRef::new(
                            Marketplace::Vercel,
                            &installation.id,
                        ),
                    ),
                ),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(subscription.plan_id, "team");
        assert_eq!(
            subscription.scope,
            provisioning_pb::SubscriptionScope::Account as i32
        );
        let stored = vercel.stored_resource(joined["id"].as_str().unwrap()).await;
        assert_eq!(
            stored.subscription_id, subscription.id,
            "no resource-level subscription"
        );
        let own = vercel
            .stored_resource(standard["id"].as_str().unwrap())
            .await;
        assert_ne!(own.subscription_id, subscription.id);

        // The free installation plan switches the plan in force.
        let second = vercel
            .provision(
                &installation,
                &admin,
                provision_body("cache", "team-free", "free-cache", json!({})),
            )
            .await;
        assert_eq!(second["billingPlan"]["id"], "team-free");
        let read = vercel
            .partner
            .get(&installation_path(&installation))
            .user(&admin)
            .send()
            .await;
        assert_eq!(read.body["billingPlan"]["id"], "team-free");
        vercel.stop().await;
    }
);
