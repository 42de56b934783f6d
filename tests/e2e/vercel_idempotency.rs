//! Every mutating partner call replayed with its `Idempotency-Key` answers
//! exactly what it answered first and does nothing twice; the same key with
//! another body is refused.

use crate::vercel_support::{
    CACHE_DELAY_SECONDS, VercelOptions, assert_error, installation_path, provision_body,
    resource_path, vercel_set,
};
use marketbridge_simulators::vercel::{PartnerAnswer, PartnerRequest};
use marketbridge_storage::backend_test;
use serde_json::json;

/// Sends the same request twice; asserts both answers are identical and
/// returns the first.
async fn twice(build: impl Fn() -> PartnerRequest) -> PartnerAnswer {
    let first = build().send().await;
    let second = build().send().await;
    assert_eq!(
        (first.status, &first.text),
        (second.status, &second.text),
        "a replay answers exactly the first answer"
    );
    first
}

fn assert_reused(answer: &PartnerAnswer) {
    assert_error(answer, 422, "idempotency_key_reused");
    assert!(answer.body["error"]["user"]["message"].is_string());
}

backend_test!(
    replays_answer_the_same_and_change_nothing,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::manual()).await;
        let sim = &vercel.sim;
        let partner = &vercel.partner;
        let installation = sim.new_installation();
        let admin = sim.admin_token(&installation);
        let install_path = installation_path(&installation);

        // Install.
        let body = installation.upsert_body();
        let answer = twice(|| {
            partner
                .put(&install_path)
                .user(&admin)
                .idempotency_key("k-install")
                .json(&body)
        })
        .await;
        assert_eq!(answer.status, 204);
        let account = vercel.account(&installation).await;
        let mut changed = body.clone();
        changed["account"]["name"] = json!("Someone else");
        let reused = partner
            .put(&install_path)
            .user(&admin)
            .idempotency_key("k-install")
            .json(&changed)
            .send()
            .await;
        assert_reused(&reused);
        assert_eq!(
            vercel.account(&installation).await,
            account,
            "nothing changed"
        );

        // Installation plan.
        let answer = twice(|| {
            partner
                .patch(&install_path)
                .user(&admin)
                .idempotency_key("k-plan")
                .json(&json!({"billingPlanId": "team"}))
        })
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(answer.body["billingPlan"]["id"], "team");
        let reused = partner
            .patch(&install_path)
            .user(&admin)
            .idempotency_key("k-plan")
            .json(&json!({"billingPlanId": "team-free"}))
            .send()
            .await;
        assert_reused(&reused);

        // Provision: one resource, whatever the retries.
        let resources = format!("{install_path}/resources");
        let body = provision_body("database", "pro", "db", json!({"region": "sfo1"}));
        let answer = twice(|| {
            partner
                .post(&resources)
                .user(&admin)
                .idempotency_key("k-provision")
                .json(&body)
        })
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        let resource_id = answer.body["id"].as_str().unwrap().to_owned();
        let mut other = body.clone();
        other["name"] = json!("db-2");
        let reused = partner
            .post(&resources)
            .user(&admin)
            .idempotency_key("k-provision")
            .json(&other)
            .send()
            .await;
        assert_reused(&reused);
        assert_eq!(vercel.stored_resources(&account.id).await.len(), 1);
        // Keys are scoped per operation: the same key on another route is
        // another call.
        let cache = partner
            .post(&resources)
            .user(&admin)
            .idempotency_key("k-other-route")
            .json(&provision_body("cache", "standard", "cache", json!({})))
            .send()
            .await;
        let cache_id = cache.body["id"].as_str().unwrap().to_owned();
        let patched = partner
            .patch(&resource_path(&installation, &cache_id))
            .user(&admin)
            .idempotency_key("k-other-route")
            .json(&json!({"name": "cache-1"}))
            .send()
            .await;
        assert_eq!(patched.status, 200, "{}", patched.text);

        // Update.
        let answer = twice(|| {
            partner
                .patch(&resource_path(&installation, &resource_id))
                .user(&admin)
                .idempotency_key("k-update")
                .json(&json!({"billingPlanId": "free"}))
        })
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        let reused = partner
            .patch(&resource_path(&installation, &resource_id))
            .user(&admin)
            .idempotency_key("k-update")
            .json(&json!({"billingPlanId": "pro"}))
            .send()
            .await;
        assert_reused(&reused);
        assert_eq!(vercel.stored_resource(&resource_id).await.plan_id, "free");

        // Rotate at once: the replay returns the same new secrets, no third
        // set.
        let rotate = format!(
            "{}/secrets/rotate",
            resource_path(&installation, &resource_id)
        );
        let answer = twice(|| {
            partner
                .post(&rotate)
                .user(&admin)
                .idempotency_key("k-rotate")
                .json(&json!({"reason": "x"}))
        })
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(
            vercel.stored_resource(&resource_id).await.secrets_version,
            2
        );
        let reused = partner
            .post(&rotate)
            .user(&admin)
            .idempotency_key("k-rotate")
            .json(&json!({"reason": "y"}))
            .send()
            .await;
        assert_reused(&reused);

        // Rotate later: one push to Vercel.
        vercel.advance(CACHE_DELAY_SECONDS + 1);
        vercel.drain().await;
        let pushes_before = sim
            .resource(&installation.id, &cache_id)
            .unwrap()
            .secret_pushes
            .len();
        let rotate_later = format!("{}/secrets/rotate", resource_path(&installation, &cache_id));
        let answer = twice(|| {
            partner
                .post(&rotate_later)
                .user(&admin)
                .idempotency_key("k-rotate-later")
                .json(&json!({}))
        })
        .await;
        assert_eq!(answer.status, 202);
        vercel.drain().await;
        let at_vercel = sim.resource(&installation.id, &cache_id).unwrap();
        assert_eq!(at_vercel.secret_pushes.len(), pushes_before + 1);
        assert_eq!(vercel.stored_resource(&cache_id).await.secrets_version, 2);

        // Prepayment.
        let invoice_id = sim.create_invoice(&installation.id, "15.00", "paid");
        let purchase = format!("{install_path}/billing/provision");
        let answer = twice(|| {
            partner
                .post(&purchase)
                .user(&admin)
                .idempotency_key("k-purchase")
                .json(&json!({"invoiceId": invoice_id}))
        })
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(answer.body["balances"][0]["currencyValueInCents"], 1500);

        // Delete.
        let answer = twice(|| {
            partner
                .delete(&resource_path(&installation, &resource_id))
                .user(&admin)
                .idempotency_key("k-delete")
        })
        .await;
        assert_eq!(answer.status, 204);

        // Uninstall.
        vercel.drain().await;
        let answer = twice(|| {
            partner
                .delete(&install_path)
                .user(&admin)
                .idempotency_key("k-uninstall")
                .json(&json!({"cascadeResourceDeletion": true}))
        })
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(answer.body, json!({"finalized": false}));
        let uninstalled = marketbridge_proto::provisioning::v1::ResourceStatus::Uninstalled as i32;
        assert!(
            vercel
                .stored_resources(&account.id)
                .await
                .iter()
                .all(|r| r.status == uninstalled)
        );
        vercel.stop().await;
    }
);
