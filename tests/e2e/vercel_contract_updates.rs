//! Vercel contract updates: an installation-level plan named on Provision
//! Resource; the installing user's `user_email`; production-only
//! resources, whose secrets carry no development or preview values.

use crate::vercel_support::{
    CACHE_DELAY_SECONDS, VercelOptions, VercelTest, installation_path, provision_body,
    resource_path, vercel_set,
};
use marketbridge_proto::common::v1::Marketplace;
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_simulators::vercel::tokens::SimUser;
use marketbridge_simulators::vercel::webhooks::project_connection_payload;
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

/// The secrets of the last secrets update Vercel accepted for `path`.
fn last_pushed_secrets(vercel: &VercelTest, path: &str) -> Vec<serde_json::Value> {
    let pushes = vercel
        .sim
        .recorder()
        .accepted("PUT", &format!("{path}/secrets"));
    let last = pushes.last().expect("a secrets update reached Vercel");
    last.json()["secrets"].as_array().unwrap().clone()
}

/// Rotates `resource_id`'s secrets and runs the outbox until the new ones
/// reach Vercel.
async fn rotate(vercel: &VercelTest, path: &str, resource_id: &str) {
    let before = vercel
        .sim
        .recorder()
        .accepted("PUT", &format!("{path}/secrets"))
        .len();
    let mut provisioning = vercel.test.set.clients.provisioning.clone();
    let rotated = provisioning
        .rotate_secrets(provisioning_pb::RotateSecretsRequest {
            resource_id: resource_id.to_owned(),
            old_secrets_valid_for_seconds: 60,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!rotated.sync, "a cache rotates asynchronously");
    vercel.advance(CACHE_DELAY_SECONDS + 1);
    vercel.drain().await;
    let after = vercel
        .sim
        .recorder()
        .accepted("PUT", &format!("{path}/secrets"))
        .len();
    assert_eq!(
        after,
        before + 1,
        "the rotation pushed the new secrets once"
    );
}

fn overrides_of(secrets: &[serde_json::Value], name: &str) -> serde_json::Value {
    secrets
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} is pushed"))
        .get("environmentOverrides")
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

backend_test!(
    a_production_only_resource_gets_its_secrets_without_development_values,
    |database| async move {
        let vercel = vercel_set(
            &database,
            VercelOptions {
                manual: true,
                tweak: Some(|config| {
                    config.vercel.allowed_environments_field = "allowedEnvironments".into();
                }),
                ..Default::default()
            },
        )
        .await;
        let (installation, admin) = vercel.install().await;
        let mut ids = Vec::new();
        for name in ["normal", "marked-by-operator", "marked-by-vercel"] {
            let created = vercel
                .provision(
                    &installation,
                    &admin,
                    provision_body("cache", "standard", name, json!({})),
                )
                .await;
            ids.push(created["id"].as_str().unwrap().to_owned());
        }
        vercel.advance(CACHE_DELAY_SECONDS + 1);
        vercel.drain().await;

        // An operator marks one through the admin gRPC call.
        let mut provisioning = vercel.test.set.clients.provisioning.clone();
        let marked = provisioning
            .update_resource(provisioning_pb::UpdateResourceRequest {
                resource_id: ids[1].clone(),
                production_only: Some(true),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(marked.production_only);
        // Vercel marks another through the configured field; a malformed
        // value is ignored, not refused.
        let odd = vercel
            .partner
            .patch(&resource_path(&installation, &ids[2]))
            .user(&admin)
            .json(&json!({"allowedEnvironments": "production"}))
            .send()
            .await;
        assert_eq!(odd.status, 200, "{}", odd.text);
        assert!(!vercel.stored_resource(&ids[2]).await.production_only);
        let changed = vercel
            .partner
            .patch(&resource_path(&installation, &ids[2]))
            .user(&admin)
            .json(&json!({"allowedEnvironments": ["production"]}))
            .send()
            .await;
        assert_eq!(changed.status, 200, "{}", changed.text);
        assert!(vercel.stored_resource(&ids[2]).await.production_only);
        assert!(!vercel.stored_resource(&ids[0]).await.production_only);

        // The normal resource's rotation keeps the development value; the
        // production-only ones' drop it.
        let normal = resource_path(&installation, &ids[0]);
        rotate(&vercel, &normal, &ids[0]).await;
        let overrides = overrides_of(&last_pushed_secrets(&vercel, &normal), "REDIS_URL");
        assert!(overrides["development"].as_str().is_some(), "{overrides}");
        for id in &ids[1..] {
            let path = resource_path(&installation, id);
            rotate(&vercel, &path, id).await;
            let secrets = last_pushed_secrets(&vercel, &path);
            for secret in &secrets {
                let overrides = secret.get("environmentOverrides");
                assert!(
                    overrides.is_none_or(
                        |o| o.get("development").is_none() && o.get("preview").is_none()
                    ),
                    "{secret}"
                );
            }
            assert!(secrets.iter().any(|s| s["name"] == "REDIS_URL"));
        }

        // The connections Vercel removes are disconnected without harm.
        let webhooks = vercel.sim.webhooks(&vercel.url("/webhook"));
        let (_, answer) = webhooks
            .send_event(
                "integration-resource.project-disconnected",
                project_connection_payload(
                    &installation.id,
                    &installation.team_id,
                    &ids[1],
                    "prj_preview",
                ),
            )
            .await;
        assert!(answer.status / 100 == 2, "{}", answer.text);
        vercel.drain().await;
        let stored = vercel.stored_resource(&ids[1]).await;
        assert!(stored.production_only);
        assert!(stored.connections.is_empty());
        vercel.stop().await;
    }
);
