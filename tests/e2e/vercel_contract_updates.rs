//! Vercel contract updates: an installation-level plan named on Provision
//! Resource; the installing user's `user_email`.

use crate::vercel_support::{VercelOptions, installation_path, provision_body, vercel_set};
use marketbridge_proto::common::v1::Marketplace;
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_simulators::vercel::tokens::SimUser;
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

backend_test!(
    the_installing_users_email_is_the_contact_when_the_body_has_none,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::default()).await;

        // The body's contact wins when there is one.
        let (installation, _) = vercel.install().await;
        let account = vercel.account(&installation).await;
        assert_eq!(
            account.contact.unwrap().email,
            format!("owner@{}.example.com", installation.team_id.to_lowercase())
        );

        // Without one, the token's `user_email` is the contact.
        let installation = vercel.sim.new_installation();
        let user = SimUser::admin();
        let token = vercel.sim.user_token(&installation, &user);
        let mut body = installation.upsert_body();
        body["account"]["contact"] = serde_json::Value::Null;
        let answer = vercel
            .partner
            .put(&installation_path(&installation))
            .user(&token)
            .json(&body)
            .send()
            .await;
        assert_eq!(answer.status, 204, "{}", answer.text);
        let contact = vercel.account(&installation).await.contact.unwrap();
        assert_eq!(contact.email, user.email);
        assert_eq!(contact.name, user.name);

        // A user token without `user_email` still installs.
        let installation = vercel.sim.new_installation();
        let mut user = SimUser::admin();
        user.email = String::new();
        let token = vercel.sim.user_token(&installation, &user);
        let mut body = installation.upsert_body();
        body["account"]["contact"] = serde_json::Value::Null;
        let answer = vercel
            .partner
            .put(&installation_path(&installation))
            .user(&token)
            .json(&body)
            .send()
            .await;
        assert_eq!(answer.status, 204, "{}", answer.text);
        let account = vercel.account(&installation).await;
        assert!(account.contact.is_none_or(|c| c.email.is_empty()));
        vercel.stop().await;
    }
);
