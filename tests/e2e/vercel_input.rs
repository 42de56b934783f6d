//! Bad input to the partner API: unreadable, incomplete or mistyped bodies,
//! unknown products, plans, installations and resources. Each gets a 4xx
//! with the contract's error body naming the field, never a 500, and
//! changes nothing.

use crate::vercel_support::{
    VercelOptions, assert_error, field_keys, installation_path, provision_body, resource_path,
    vercel_set,
};
use marketbridge_storage::backend_test;
use serde_json::json;

backend_test!(
    bad_input_gets_a_clear_4xx_and_changes_nothing,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::default()).await;
        let sim = &vercel.sim;
        let partner = &vercel.partner;
        let (installation, admin) = vercel.install().await;
        let resources = format!("{}/resources", installation_path(&installation));

        let cases = [
            ("{not json", vec!["body"]),
            ("", vec!["body"]),
            ("[1, 2]", vec!["body"]),
            (
                r#"{"name": "x", "metadata": {}, "billingPlanId": "free"}"#,
                vec!["productId"],
            ),
            (
                r#"{"productId": "database", "name": 7, "metadata": {}, "billingPlanId": "free"}"#,
                vec!["name"],
            ),
            (
                r#"{"productId": "database", "name": "x", "metadata": "region", "billingPlanId": "free"}"#,
                vec!["metadata"],
            ),
            (
                r#"{"productId": "nope", "name": "x", "metadata": {}, "billingPlanId": "free"}"#,
                vec!["productId"],
            ),
            (
                r#"{"productId": "database", "name": "x", "metadata": {}, "billingPlanId": "gold"}"#,
                vec!["billingPlanId"],
            ),
            (
                r#"{"productId": "database", "name": "x", "metadata": {"region": "mars1"}, "billingPlanId": "free"}"#,
                vec!["region"],
            ),
            (
                r#"{"productId": "database", "name": "x", "metadata": {"region": "iad1"}, "billingPlanId": "pro-eu"}"#,
                vec!["billingPlanId"],
            ),
            (
                r#"{"productId": "database", "name": "", "metadata": {}, "billingPlanId": "free"}"#,
                vec!["name"],
            ),
        ];
        for (body, fields) in cases {
            let answer = partner.post(&resources).user(&admin).raw(body).send().await;
            assert_error(&answer, 400, "validation_error");
            assert_eq!(field_keys(&answer), fields, "{body}: {}", answer.text);
        }
        let eu = partner
            .post(&resources)
            .user(&admin)
            .raw(r#"{"productId": "database", "name": "x", "metadata": {"region": "iad1"}, "billingPlanId": "pro-eu"}"#)
            .send()
            .await;
        assert!(
            eu.body["error"]["user"]["message"].is_string(),
            "{}",
            eu.text
        );

        // Installation bodies.
        let mut body = installation.upsert_body();
        body["credentials"] = json!({"token_type": "Bearer"});
        let answer = partner
            .put(&installation_path(&installation))
            .user(&admin)
            .json(&body)
            .send()
            .await;
        assert_error(&answer, 400, "validation_error");
        assert_eq!(field_keys(&answer), ["credentials.access_token"]);
        let mut body = installation.upsert_body();
        body["acceptedPolicies"] = json!({"toc": "last tuesday"});
        let answer = partner
            .put(&installation_path(&installation))
            .user(&admin)
            .json(&body)
            .send()
            .await;
        assert_eq!(field_keys(&answer), ["acceptedPolicies.toc"]);
        let mut body = installation.upsert_body();
        body["scopes"] = json!("all");
        let answer = partner
            .put(&installation_path(&installation))
            .user(&admin)
            .json(&body)
            .send()
            .await;
        assert_eq!(field_keys(&answer), ["scopes"]);

        // Query strings and rotation bounds.
        let answer = partner
            .get("/v1/products/database/plans?metadata=%7Bregion")
            .user(&admin)
            .send()
            .await;
        assert_error(&answer, 400, "validation_error");
        assert_eq!(field_keys(&answer), ["metadata"]);
        let answer = partner
            .get("/v1/products/unknown-product/plans")
            .user(&admin)
            .send()
            .await;
        assert_error(&answer, 400, "validation_error");
        assert_eq!(field_keys(&answer), ["productSlug"]);
        let resource = vercel
            .provision(
                &installation,
                &admin,
                provision_body("database", "free", "db", json!({})),
            )
            .await;
        let resource_id = resource["id"].as_str().unwrap().to_owned();
        for hours in [json!(720.5), json!(-1), json!("soon")] {
            let answer = partner
                .post(&format!(
                    "{}/secrets/rotate",
                    resource_path(&installation, &resource_id)
                ))
                .user(&admin)
                .json(&json!({"delayOldSecretsExpirationHours": hours}))
                .send()
                .await;
            assert_error(&answer, 400, "validation_error");
            assert_eq!(field_keys(&answer), ["delayOldSecretsExpirationHours"]);
        }
        let answer = partner
            .patch(&resource_path(&installation, &resource_id))
            .user(&admin)
            .json(&json!({"metadata": {"region": "moon"}}))
            .send()
            .await;
        assert_eq!(field_keys(&answer), ["region"]);

        // Unknown things are 404.
        for path in [
            resource_path(&installation, "res_0190f8a0b1c2d3e4f5a6b7c8d9e0f1a2"),
            resource_path(&installation, "not-an-id"),
            format!(
                "{}/plans",
                resource_path(&installation, "res_0190f8a0b1c2d3e4f5a6b7c8d9e0f1a2")
            ),
        ] {
            let answer = partner.get(&path).user(&admin).send().await;
            assert_error(&answer, 404, "not_found");
        }
        let answer = partner
            .delete(&resource_path(
                &installation,
                "res_0190f8a0b1c2d3e4f5a6b7c8d9e0f1a2",
            ))
            .user(&admin)
            .send()
            .await;
        assert_error(&answer, 404, "not_found");
        let never = sim.new_installation();
        let token = sim.admin_token(&never);
        for answer in [
            partner
                .get(&installation_path(&never))
                .user(&token)
                .send()
                .await,
            partner
                .post(&format!("{}/resources", installation_path(&never)))
                .user(&token)
                .json(&provision_body("database", "free", "x", json!({})))
                .send()
                .await,
            partner
                .delete(&installation_path(&never))
                .user(&token)
                .send()
                .await,
        ] {
            assert_error(&answer, 404, "not_found");
        }

        // Deleted resources cannot change (the contract's 409 is for state
        // conflicts; a gone resource reads as 404).
        partner
            .delete(&resource_path(&installation, &resource_id))
            .user(&admin)
            .send()
            .await;
        let answer = partner
            .patch(&resource_path(&installation, &resource_id))
            .user(&admin)
            .json(&json!({"name": "again"}))
            .send()
            .await;
        assert_error(&answer, 404, "not_found");

        // An uninstalled installation refuses new resources with 404, and
        // a bad Idempotency-Key is a 400.
        let answer = partner
            .post(&resources)
            .user(&admin)
            .idempotency_key("bad key with spaces")
            .json(&provision_body("database", "free", "x", json!({})))
            .send()
            .await;
        assert_error(&answer, 400, "validation_error");
        assert_eq!(field_keys(&answer), ["Idempotency-Key"]);
        partner
            .delete(&installation_path(&installation))
            .user(&admin)
            .send()
            .await;
        let answer = partner
            .post(&resources)
            .user(&admin)
            .json(&provision_body("database", "free", "x", json!({})))
            .send()
            .await;
        assert_error(&answer, 404, "not_found");

        // None of it wrote anything.
        let account = vercel.account(&installation).await;
        assert_eq!(vercel.stored_resources(&account.id).await.len(), 1);
        vercel.stop().await;
    }
);
