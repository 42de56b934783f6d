//! The whole Vercel flow over real HTTP and gRPC: install → plans →
//! provision (at once, and pending → ready with Vercel told) → get → change
//! plan → rotate secrets (at once and later) → delete → uninstall.

use crate::vercel_support::{
    CACHE_DELAY_SECONDS, VercelOptions, assert_error, field_keys, installation_path,
    provision_body, resource_path, vercel_set,
};
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::common::v1::{AccountSelector, Marketplace};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_storage::backend_test;
use serde_json::{Value, json};

fn plan_ids(answer: &Value) -> Vec<String> {
    answer["plans"]
        .as_array()
        .expect("a plan list")
        .iter()
        .map(|p| p["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn secret(body: &Value, name: &str) -> Value {
    body["secrets"]
        .as_array()
        .and_then(|secrets| secrets.iter().find(|s| s["name"] == name).cloned())
        .unwrap_or(Value::Null)
}

backend_test!(
    install_plans_provision_change_rotate_delete_uninstall,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::manual()).await;
        let sim = &vercel.sim;
        let partner = &vercel.partner;

        // Install: 204, the account is stored with its terms, scopes, team,
        // contact, the installing user, and the token encrypted.
        let (installation, admin) = vercel.install().await;
        let account = vercel.account(&installation).await;
        assert_eq!(account.state, account_pb::AccountState::Active as i32);
        assert!(account.display_name.starts_with("Team "));
        assert!(account.has_credential);
        assert_eq!(account.accepted_terms[0].policy_id, "toc");
        assert_eq!(account.scopes.len(), 2);
        assert_eq!(account.attributes["vercel_team_id"], installation.team_id);
        assert_eq!(account.people[0].role, "ADMIN");
        assert!(account.contact.unwrap().email.starts_with("owner@"));
        let mut accounts = vercel.test.set.clients.account.clone();
        let credential = accounts
            .get_marketplace_credential(account_pb::GetMarketplaceCredentialRequest {
                account: Some(AccountSelector::by_ref(
                    Marketplace::Vercel,
                    &installation.id,
                )),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(credential.access_token, installation.token);
        let raw = marketbridge_storage::connect(&vercel.test.set.config.account.database_url)
            .await
            .unwrap();
        use sea_orm::{ConnectionTrait, Statement};
        let rows = raw
            .query_all_raw(Statement::from_string(
                raw.get_database_backend(),
                "SELECT credential FROM accounts",
            ))
            .await
            .unwrap();
        let stored: Option<String> = rows[0].try_get("", "credential").unwrap();
        assert!(
            !stored.unwrap().contains(&installation.token),
            "encrypted at rest"
        );

        // Plans, before installing (system token without installation) and
        // after, depending on the metadata.
        let anonymous = sim.system_token(None);
        let plans = partner
            .get("/v1/products/database/plans?metadata=%7B%22region%22%3A%22fra1%22%7D")
            .system(&anonymous)
            .send()
            .await;
        assert_eq!(plans.status, 200, "{}", plans.text);
        assert_eq!(plan_ids(&plans.body), ["free", "pro", "pro-eu", "prepaid"]);
        let plans = partner
            .get("/v1/products/database/plans?metadata=%7B%22region%22%3A%22iad1%22%7D")
            .user(&admin)
            .send()
            .await;
        assert_eq!(plan_ids(&plans.body), ["free", "pro", "prepaid"]);
        let free = &plans.body["plans"][0];
        assert_eq!(free["type"], "subscription");
        assert_eq!(free["scope"], "resource");
        assert_eq!(free["paymentMethodRequired"], false);
        assert_eq!(
            free["details"][0],
            json!({"label": "Storage", "value": "5 GB"})
        );
        let pro = &plans.body["plans"][1];
        assert_eq!(pro["cost"], "$20.00/month");
        assert_eq!(pro["quote"][0]["amount"], "20.00");
        assert_eq!(
            pro["highlightedDetails"][0],
            json!({"label": "Daily backups"})
        );
        let prepaid = &plans.body["plans"][2];
        assert_eq!(prepaid["type"], "prepayment");
        assert_eq!(prepaid["minimumAmount"], "5.00");
        assert_eq!(prepaid["maximumAmountAutoPurchasePerPeriod"], "100.00");
        assert!(prepaid.get("paymentMethodRequired").is_none());
        let installation_plans = partner
            .get(&format!("{}/plans", installation_path(&installation)))
            .system(&sim.system_token(Some(&installation)))
            .send()
            .await;
        assert_eq!(plan_ids(&installation_plans.body), ["team-free", "team"]);
        assert_eq!(installation_plans.body["plans"][1]["scope"], "installation");

        // Provision at once: ready, with its secrets.
        let database_resource = vercel
            .provision(
                &installation,
                &admin,
                provision_body("database", "pro", "main-db", json!({"region": "fra1"})),
            )
            .await;
        let database_id = database_resource["id"].as_str().unwrap().to_owned();
        assert!(database_id.starts_with("res_"));
        assert_eq!(database_resource["status"], "ready");
        assert_eq!(database_resource["productId"], "database");
        assert_eq!(database_resource["metadata"], json!({"region": "fra1"}));
        assert_eq!(database_resource["billingPlan"]["id"], "pro");
        let url = secret(&database_resource, "DATABASE_URL");
        assert!(
            url["value"]
                .as_str()
                .unwrap()
                .contains("fra1.db.example.com")
        );
        let original_password = secret(&database_resource, "PGPASSWORD")["value"].clone();

        // Provision a slow product: pending now, with secrets known ahead.
        let cache_resource = vercel
            .provision(
                &installation,
                &admin,
                provision_body("cache", "standard", "sessions", json!({})),
            )
            .await;
        let cache_id = cache_resource["id"].as_str().unwrap().to_owned();
        assert_eq!(cache_resource["status"], "pending");
        let redis = secret(&cache_resource, "REDIS_URL");
        assert!(
            redis["environmentOverrides"]["development"]
                .as_str()
                .unwrap()
                .starts_with("redis://localhost")
        );

        // Get: no secrets in the answer.
        let fetched = partner
            .get(&resource_path(&installation, &database_id))
            .user(&admin)
            .send()
            .await;
        assert_eq!(fetched.status, 200, "{}", fetched.text);
        assert_eq!(fetched.body["name"], "main-db");
        assert!(fetched.body.get("secrets").is_none());

        // Nothing is told to Vercel before the cache is ready...
        vercel.drain().await;
        assert!(
            sim.resource(&installation.id, &cache_id)
                .unwrap()
                .updates
                .is_empty()
        );
        // ...then the resource is patched ready, its secrets pushed, and a
        // resource.updated event dispatched.
        vercel.advance(CACHE_DELAY_SECONDS + 1);
        vercel.drain().await;
        let at_vercel = sim.resource(&installation.id, &cache_id).unwrap();
        assert_eq!(at_vercel.status, "ready");
        assert_eq!(at_vercel.updates[0]["notification"], Value::Null);
        assert_eq!(at_vercel.secret_pushes.len(), 1);
        assert_eq!(
            at_vercel.secret("REDIS_URL").unwrap(),
            redis["value"].as_str().unwrap()
        );
        let events = sim
            .installation(&installation.id)
            .unwrap()
            .events_of_type("resource.updated");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["event"]["resourceId"], cache_id.as_str());
        assert_eq!(events[0]["event"]["productId"], "cache");
        for call in sim.recorder().calls() {
            if call.path.starts_with("/v1/installations/") {
                assert!(
                    sim.is_installation_token(&installation.id, call.header("authorization")),
                    "{} {}",
                    call.method,
                    call.path
                );
            }
        }
        let cache_now = partner
            .get(&resource_path(&installation, &cache_id))
            .user(&admin)
            .send()
            .await;
        assert_eq!(cache_now.body["status"], "ready");

        // Change plan (and name); the plans a resource may move to.
        let changed = partner
            .patch(&resource_path(&installation, &database_id))
            .user(&admin)
            .json(&json!({"billingPlanId": "free", "name": "main"}))
            .send()
            .await;
        assert_eq!(changed.status, 200, "{}", changed.text);
        assert_eq!(changed.body["billingPlan"]["id"], "free");
        assert_eq!(changed.body["name"], "main");
        assert_eq!(vercel.stored_resource(&database_id).await.plan_id, "free");
        let resource_plans = partner
            .get(&format!(
                "{}/plans",
                resource_path(&installation, &database_id)
            ))
            .user(&admin)
            .send()
            .await;
        assert_eq!(
            plan_ids(&resource_plans.body),
            ["free", "pro", "pro-eu", "prepaid"]
        );
        let filtered = partner
            .get(&format!(
                "{}/plans?metadata=%7B%22region%22%3A%22sfo1%22%7D",
                resource_path(&installation, &database_id)
            ))
            .user(&admin)
            .send()
            .await;
        assert_eq!(plan_ids(&filtered.body), ["free", "pro", "prepaid"]);
        let refused = partner
            .patch(&resource_path(&installation, &database_id))
            .user(&admin)
            .json(&json!({"billingPlanId": "platinum"}))
            .send()
            .await;
        assert_error(&refused, 400, "validation_error");
        assert_eq!(field_keys(&refused), ["billingPlanId"]);

        // Rotate at once: new secrets now, the old ones kept for 1.5 hours.
        let rotated = partner
            .post(&format!(
                "{}/secrets/rotate",
                resource_path(&installation, &database_id)
            ))
            .user(&admin)
            .json(&json!({"reason": "leaked", "delayOldSecretsExpirationHours": 1.5}))
            .send()
            .await;
        assert_eq!(rotated.status, 200, "{}", rotated.text);
        assert_eq!(rotated.body["sync"], true);
        assert_ne!(
            secret(&rotated.body, "PGPASSWORD")["value"],
            original_password
        );
        assert_eq!(
            vercel.stored_resource(&database_id).await.secrets_version,
            2
        );

        // Rotate later: 202, then the new secrets are pushed to Vercel.
        let later = partner
            .post(&format!(
                "{}/secrets/rotate",
                resource_path(&installation, &cache_id)
            ))
            .user(&admin)
            .json(&json!({}))
            .send()
            .await;
        assert_eq!(later.status, 202, "{}", later.text);
        assert_eq!(later.body, json!({"sync": false}));
        vercel.drain().await;
        let at_vercel = sim.resource(&installation.id, &cache_id).unwrap();
        assert_eq!(at_vercel.secret_pushes.len(), 2);
        assert_ne!(
            at_vercel.secret("REDIS_URL").unwrap(),
            redis["value"].as_str().unwrap()
        );
        assert_eq!(vercel.stored_resource(&cache_id).await.secrets_version, 2);

        // Delete: 204, twice; then it is gone.
        for _ in 0..2 {
            let deleted = partner
                .delete(&resource_path(&installation, &database_id))
                .user(&admin)
                .send()
                .await;
            assert_eq!(deleted.status, 204, "{}", deleted.text);
            assert!(deleted.text.is_empty());
        }
        let gone = partner
            .get(&resource_path(&installation, &database_id))
            .user(&admin)
            .send()
            .await;
        assert_error(&gone, 404, "not_found");
        let listed = partner
            .get(&format!("{}/resources", installation_path(&installation)))
            .user(&admin)
            .send()
            .await;
        let ids: Vec<&str> = listed.body["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [cache_id.as_str()]);
        let by_ids = partner
            .get(&format!(
                "{}/resources?ids={database_id},{cache_id}",
                installation_path(&installation)
            ))
            .system(&sim.system_token(Some(&installation)))
            .send()
            .await;
        assert_eq!(by_ids.body["resources"].as_array().unwrap().len(), 1);

        // Uninstall with cascade: paid plans were used, so billing is not
        // final yet; the resources go; the installation reads as gone.
        vercel.drain().await;
        let uninstalled = partner
            .delete(&installation_path(&installation))
            .system(&sim.system_token(Some(&installation)))
            .json(&json!({"cascadeResourceDeletion": true, "reason": "user_request"}))
            .send()
            .await;
        assert_eq!(uninstalled.status, 200, "{}", uninstalled.text);
        assert_eq!(uninstalled.body, json!({"finalized": false}));
        let account = vercel.account(&installation).await;
        assert_eq!(
            account.state,
            account_pb::AccountState::DeletionPending as i32
        );
        assert!(account.has_credential, "kept for the final invoices");
        assert!(
            vercel
                .stored_resources(&account.id)
                .await
                .iter()
                .all(|r| r.status == provisioning_pb::ResourceStatus::Uninstalled as i32)
        );
        let after = partner
            .get(&installation_path(&installation))
            .user(&admin)
            .send()
            .await;
        assert_error(&after, 404, "not_found");

        // A team that only ever used free plans is finalized at once.
        let (free_installation, free_admin) = vercel.install().await;
        vercel
            .provision(
                &free_installation,
                &free_admin,
                provision_body("database", "free", "hobby", json!({})),
            )
            .await;
        vercel.drain().await;
        let finalized = partner
            .delete(&installation_path(&free_installation))
            .user(&free_admin)
            .json(&json!({"cascadeResourceDeletion": true}))
            .send()
            .await;
        assert_eq!(
            finalized.body,
            json!({"finalized": true}),
            "{}",
            finalized.text
        );
        let account = vercel.account(&free_installation).await;
        assert_eq!(account.state, account_pb::AccountState::Deleted as i32);
        assert!(account.finalized_at.is_some());
        vercel.stop().await;
    }
);

backend_test!(
    installation_level_plans_start_with_the_default_and_change,
    |database| async move {
        let vercel = vercel_set(
            &database,
            VercelOptions {
                manual: false,
                default_installation_plan: Some("team-free".into()),
                ..Default::default()
            },
        )
        .await;
        let (installation, admin) = vercel.install().await;
        let read = vercel
            .partner
            .get(&installation_path(&installation))
            .system(&vercel.sim.system_token(Some(&installation)))
            .send()
            .await;
        assert_eq!(read.status, 200, "{}", read.text);
        assert_eq!(read.body["billingPlan"]["id"], "team-free");
        assert_eq!(read.body["billingPlan"]["scope"], "installation");
        // The plan covers the installation; no resource is created for it.
        let account = vercel.account(&installation).await;
        assert!(vercel.stored_resources(&account.id).await.is_empty());

        // The team renamed itself at Vercel: a refresh reads it back with
        // the installation's token.
        vercel.sim.set_account(
            &installation.id,
            json!({"name": "Renamed Team", "url": "https://vercel.com/renamed", "contact": {"email": "new@example.com", "name": "New Owner"}}),
        );
        let mut accounts = vercel.test.set.clients.account.clone();
        let refreshed = accounts
            .refresh_account(account_pb::RefreshAccountRequest {
                account: Some(AccountSelector::by_id(&account.id)),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(refreshed.display_name, "Renamed Team");
        assert_eq!(refreshed.url, "https://vercel.com/renamed");
        assert_eq!(refreshed.contact.unwrap().email, "new@example.com");
        let reads = vercel.sim.recorder().accepted(
            "GET",
            &format!("/v1/installations/{}/account", installation.id),
        );
        assert_eq!(reads.len(), 1);
        assert!(
            vercel
                .sim
                .is_installation_token(&installation.id, reads[0].header("authorization"))
        );

        let changed = vercel
            .partner
            .patch(&installation_path(&installation))
            .user(&admin)
            .json(&json!({"billingPlanId": "team"}))
            .send()
            .await;
        assert_eq!(changed.status, 200, "{}", changed.text);
        assert_eq!(changed.body["billingPlan"]["id"], "team");
        assert_eq!(changed.body["billingPlan"]["cost"], "$50.00/month");
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
        assert_eq!(
            subscription.state,
            provisioning_pb::SubscriptionState::Active as i32
        );
        // A resource plan is not an installation plan.
        let refused = vercel
            .partner
            .patch(&installation_path(&installation))
            .user(&admin)
            .json(&json!({"billingPlanId": "pro"}))
            .send()
            .await;
        assert_error(&refused, 400, "validation_error");
        assert_eq!(field_keys(&refused), ["billingPlanId"]);
        // A re-install keeps the chosen plan.
        let again = vercel
            .partner
            .put(&installation_path(&installation))
            .user(&admin)
            .json(&installation.upsert_body())
            .send()
            .await;
        assert_eq!(again.status, 204);
        let read = vercel
            .partner
            .get(&installation_path(&installation))
            .user(&admin)
            .send()
            .await;
        assert_eq!(read.body["billingPlan"]["id"], "team");
        // Uninstalling ends the installation plan.
        let uninstalled = vercel
            .partner
            .delete(&installation_path(&installation))
            .user(&admin)
            .send()
            .await;
        assert_eq!(uninstalled.status, 200, "{}", uninstalled.text);
        let subscription = provisioning
            .get_subscription(provisioning_pb::GetSubscriptionRequest {
                selector: Some(
                    provisioning_pb::get_subscription_request::Selector::SubscriptionId(
                        subscription.id,
                    ),
                ),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            subscription.state,
            provisioning_pb::SubscriptionState::Cancelled as i32
        );
        vercel.stop().await;
    }
);

backend_test!(
    rotations_of_one_resource_sent_at_once_all_succeed_one_after_another,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::default()).await;
        let (installation, admin) = vercel.install().await;
        let created = vercel
            .provision(
                &installation,
                &admin,
                provision_body("database", "pro", "busy", json!({"region": "fra1"})),
            )
            .await;
        let resource_id = created["id"].as_str().expect("an id").to_owned();
        let path = format!(
            "{}/secrets/rotate",
            resource_path(&installation, &resource_id)
        );
        // Each reads the secrets, has the driver decide new ones, then
        // writes: rotations sent together overtake one another in between.
        const ROTATIONS: usize = 8;
        let mut rotations = tokio::task::JoinSet::new();
        for n in 0..ROTATIONS {
            let (partner, path, admin) = (vercel.partner.clone(), path.clone(), admin.clone());
            rotations.spawn(async move {
                partner
                    .post(&path)
                    .user(&admin)
                    .idempotency_key(&format!("rotate-{n}"))
                    .json(&json!({"reason": "busy", "delayOldSecretsExpirationHours": 1}))
                    .send()
                    .await
            });
        }
        let mut passwords = std::collections::HashSet::new();
        for answer in rotations.join_all().await {
            assert_eq!(answer.status, 200, "{}", answer.text);
            passwords.insert(secret(&answer.body, "PGPASSWORD")["value"].to_string());
        }
        assert_eq!(
            passwords.len(),
            ROTATIONS,
            "each rotation made its own secrets"
        );
        assert_eq!(
            vercel.stored_resource(&resource_id).await.secrets_version,
            1 + ROTATIONS as u32,
            "every rotation was applied, one after another"
        );
    }
);
