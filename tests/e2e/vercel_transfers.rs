//! Claim deployments and the resource console through the partner API: an
//! installation offers a resource, another verifies and accepts the claim,
//! and the resource (with its plan and its billing) belongs to the target
//! from then on; `repl` runs console commands.

use crate::billing_vercel::{bill, clock_to, record, usage, usage_line};
use crate::vercel_support::{
    VercelOptions, assert_error, field_keys, installation_path, provision_body, resource_path,
    vercel_set,
};
use chrono::Duration as ChronoDuration;
use marketbridge_core::time::parse_rfc3339;
use marketbridge_simulators::vercel::tokens::SimUser;
use marketbridge_storage::backend_test;
use serde_json::{Value, json};

fn transfers_path(installation_id: &str) -> String {
    format!("/v1/installations/{installation_id}/resource-transfer-requests")
}

backend_test!(
    a_claimed_resource_moves_with_its_plan_and_billing,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::manual()).await;
        let (sim, partner, test) = (&vercel.sim, &vercel.partner, &vercel.test);
        let at = |text: &str| parse_rfc3339("at", text).unwrap();
        let (source, source_admin) = vercel.install().await;
        let (target, target_admin) = vercel.install().await;
        let (other, other_admin) = vercel.install().await;
        let created = vercel
            .provision(
                &source,
                &source_admin,
                provision_body("database", "pro", "claimable", json!({"region": "iad1"})),
            )
            .await;
        let resource_id = created["id"].as_str().unwrap().to_owned();
        let kept = vercel
            .provision(
                &source,
                &source_admin,
                provision_body("database", "pro", "kept", json!({"region": "iad1"})),
            )
            .await;
        let kept_id = kept["id"].as_str().unwrap().to_owned();
        vercel.drain().await;
        clock_to(test, at("2026-11-23T12:20:00Z"));
        record(
            test,
            vec![
                usage(
                    "t1",
                    &resource_id,
                    "requests",
                    1_000,
                    at("2026-11-23T12:10:00Z"),
                ),
                usage("k1", &kept_id, "requests", 7, at("2026-11-23T12:10:00Z")),
            ],
        )
        .await;

        // The source offers the resource; a replay answers the same claim.
        let expires = (test.now() + ChronoDuration::hours(1)).timestamp_millis();
        let offer = json!({"resourceIds": [resource_id], "expiresAt": expires});
        let create = || {
            partner
                .post(&transfers_path(&source.id))
                .user(&source_admin)
                .idempotency_key("claim-1")
                .json(&offer)
        };
        let answer = create().send().await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        let claim_id = answer.body["providerClaimId"].as_str().unwrap().to_owned();
        assert!(claim_id.starts_with("clm_"), "{claim_id}");
        assert_eq!(create().send().await.body, answer.body);
        let verify = |installation_id: &str, claim: &str| {
            format!("{}/{claim}/verify", transfers_path(installation_id))
        };
        let accept = |installation_id: &str, claim: &str| {
            format!("{}/{claim}/accept", transfers_path(installation_id))
        };

        // Who may do what: the path is the target's and must be the token's.
        let answer = partner
            .get(&verify(&source.id, &claim_id))
            .user(&target_admin)
            .send()
            .await;
        assert_error(&answer, 403, "forbidden");
        let answer = partner
            .get(&verify(&source.id, &claim_id))
            .user(&source_admin)
            .send()
            .await;
        assert_error(&answer, 409, "conflict");
        let answer = partner
            .get(&verify(&target.id, "clm_0123456789abcdef0123456789abcdef"))
            .user(&target_admin)
            .send()
            .await;
        assert_error(&answer, 404, "not_found");
        let viewer = sim.user_token(&target, &SimUser::viewer());
        let answer = partner
            .post(&accept(&target.id, &claim_id))
            .user(&viewer)
            .json(&json!({}))
            .send()
            .await;
        assert_error(&answer, 403, "forbidden");
        let answer = partner
            .post(&accept(&target.id, &claim_id))
            .user(&target_admin)
            .json(&json!({"targetInstallationId": other.id}))
            .send()
            .await;
        assert_error(&answer, 400, "validation_error");
        assert_eq!(field_keys(&answer), vec!["targetInstallationId"]);

        // Verify (any member may), then accept.
        let answer = partner
            .get(&verify(&target.id, &claim_id))
            .user(&viewer)
            .send()
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(answer.body["valid"], true);
        assert_eq!(answer.body["billingPlan"]["id"], "pro");
        let answer = partner
            .post(&accept(&target.id, &claim_id))
            .user(&target_admin)
            .idempotency_key("accept-1")
            .json(&json!({"targetInstallationId": target.id, "targetTeamId": target.team_id}))
            .send()
            .await;
        assert_eq!(answer.status, 204, "{}", answer.text);
        // Accepting again, with or without the key, changes nothing; another
        // installation is too late.
        for key in ["accept-1", "accept-2"] {
            let again = partner
                .post(&accept(&target.id, &claim_id))
                .user(&target_admin)
                .idempotency_key(key)
                .send()
                .await;
            assert_eq!(again.status, 204, "{}", again.text);
        }
        let late = partner
            .post(&accept(&other.id, &claim_id))
            .user(&other_admin)
            .send()
            .await;
        assert_error(&late, 409, "conflict");
        let answer = partner
            .get(&verify(&target.id, &claim_id))
            .user(&target_admin)
            .send()
            .await;
        assert_eq!(
            answer.status, 200,
            "the taker may still verify: {}",
            answer.text
        );

        // The resource is the target's now.
        let moved = partner
            .get(&resource_path(&target, &resource_id))
            .user(&target_admin)
            .send()
            .await;
        assert_eq!(moved.status, 200, "{}", moved.text);
        assert_eq!(moved.body["billingPlan"]["id"], "pro");
        let gone = partner
            .get(&resource_path(&source, &resource_id))
            .user(&source_admin)
            .send()
            .await;
        assert_error(&gone, 404, "not_found");
        let target_account = vercel.account(&target).await;
        assert_eq!(
            vercel.stored_resource(&resource_id).await.account_id,
            target_account.id
        );
        let offered_again = partner
            .post(&transfers_path(&source.id))
            .user(&source_admin)
            .json(&offer)
            .send()
            .await;
        assert_error(&offered_again, 404, "not_found");

        // Billing follows: the target's next submission carries the resource
        // with all its usage of the period, the source's no longer does.
        vercel.drain().await;
        clock_to(test, at("2026-11-23T12:45:00Z"));
        record(
            test,
            vec![usage(
                "t2",
                &resource_id,
                "requests",
                500,
                at("2026-11-23T12:40:00Z"),
            )],
        )
        .await;
        clock_to(test, at("2026-11-23T13:06:00Z"));
        bill(test).await;
        let target_data = sim.installation(&target.id).unwrap().billing_data;
        let latest = target_data.last().expect("the target is billed");
        let requests = usage_line(latest, Some(&resource_id), "Requests");
        assert_eq!(requests["periodValue"], 1_500.0);
        let source_data = sim.installation(&source.id).unwrap().billing_data;
        let latest = source_data
            .last()
            .expect("the source is billed for what it kept");
        assert_eq!(
            usage_line(latest, Some(&kept_id), "Requests")["periodValue"],
            7.0
        );
        assert!(
            !latest.to_string().contains(&resource_id),
            "the moved resource is no longer the source's: {latest}"
        );
        vercel.stop().await;
    }
);

backend_test!(
    transfer_requests_are_checked_and_expire,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::manual()).await;
        let partner = &vercel.partner;
        let (source, source_admin) = vercel.install().await;
        let (target, target_admin) = vercel.install().await;
        let resource = vercel
            .provision(
                &source,
                &source_admin,
                provision_body("database", "pro", "short-lived", json!({"region": "iad1"})),
            )
            .await;
        let resource_id = resource["id"].as_str().unwrap().to_owned();
        let now_ms = vercel.test.now().timestamp_millis();

        // Bad offers: 400 with the field, 404 for a resource not there.
        let cases = [
            (json!({"resourceIds": [resource_id]}), "expiresAt"),
            (
                json!({"resourceIds": [], "expiresAt": now_ms + 60_000}),
                "resourceIds",
            ),
            (
                json!({"resourceIds": [resource_id], "expiresAt": now_ms - 1}),
                "expiresAt",
            ),
            (
                json!({"resourceIds": [resource_id], "expiresAt": "soon"}),
                "expiresAt",
            ),
            (
                json!({"resourceIds": "all", "expiresAt": now_ms + 60_000}),
                "resourceIds",
            ),
        ];
        for (body, field) in cases {
            let answer = partner
                .post(&transfers_path(&source.id))
                .user(&source_admin)
                .json(&body)
                .send()
                .await;
            assert_error(&answer, 400, "validation_error");
            assert_eq!(field_keys(&answer), vec![field.to_owned()], "{body}");
        }
        let (stranger, stranger_admin) = vercel.install().await;
        let answer = partner
            .post(&transfers_path(&stranger.id))
            .user(&stranger_admin)
            .json(&json!({"resourceIds": [resource_id], "expiresAt": now_ms + 60_000}))
            .send()
            .await;
        assert_error(&answer, 404, "not_found");

        // The older shape: `PUT .../{transferId}` with `expiration`, verified
        // with `POST`; the claim keeps the caller's id.
        let answer = partner
            .put(&format!("{}/tr-42", transfers_path(&source.id)))
            .user(&source_admin)
            .json(&json!({"resourceIds": [resource_id], "expiration": now_ms + 60_000}))
            .send()
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(answer.body["providerClaimId"], "tr-42");
        let answer = partner
            .post(&format!("{}/tr-42/verify", transfers_path(&target.id)))
            .user(&target_admin)
            .send()
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        // The same id again: the same claim for the same resources, a
        // conflict for others.
        let answer = partner
            .put(&format!("{}/tr-42", transfers_path(&source.id)))
            .user(&source_admin)
            .json(&json!({"resourceIds": [resource_id], "expiration": now_ms + 30_000}))
            .send()
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        let second = vercel
            .provision(
                &source,
                &source_admin,
                provision_body("database", "pro", "another", json!({"region": "iad1"})),
            )
            .await;
        let answer = partner
            .put(&format!("{}/tr-42", transfers_path(&source.id)))
            .user(&source_admin)
            .json(&json!({"resourceIds": [second["id"]], "expiration": now_ms + 60_000}))
            .send()
            .await;
        assert_error(&answer, 409, "conflict");

        // After the expiry: 422 for verify and accept; nothing moved.
        vercel.advance(61);
        for path in [
            format!("{}/tr-42/verify", transfers_path(&target.id)),
            format!("{}/tr-42/accept", transfers_path(&target.id)),
        ] {
            let answer = partner.post(&path).user(&target_admin).send().await;
            assert_error(&answer, 422, "unprocessable");
        }
        assert_eq!(
            vercel.stored_resource(&resource_id).await.account_id,
            vercel.account(&source).await.id
        );
        vercel.stop().await;
    }
);

backend_test!(
    the_console_answers_blocks_and_respects_roles,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::manual()).await;
        let (sim, partner) = (&vercel.sim, &vercel.partner);
        let (installation, admin) = vercel.install().await;
        let resource = vercel
            .provision(
                &installation,
                &admin,
                provision_body("database", "pro", "console", json!({"region": "iad1"})),
            )
            .await;
        let resource_id = resource["id"].as_str().unwrap().to_owned();
        let repl = format!("{}/repl", resource_path(&installation, &resource_id));
        let viewer = sim.user_token(&installation, &SimUser::viewer());

        let answer = partner
            .post(&repl)
            .user(&viewer)
            .json(&json!({"input": "info", "readOnly": true}))
            .send()
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        let blocks = answer.body.as_array().expect("an array of blocks");
        assert_eq!(blocks[0]["type"], "table");
        let rows = blocks[0]["rows"].as_array().unwrap();
        let id_row = rows
            .iter()
            .find(|row| row[0]["text"] == "id")
            .expect("an id row");
        assert_eq!(id_row[1], json!({"type": "text", "text": resource_id}));
        let plan_row = rows.iter().find(|row| row[0]["text"] == "plan").unwrap();
        assert_eq!(plan_row[1]["text"], "pro");

        let answer = partner
            .post(&repl)
            .user(&admin)
            .json(&json!({"input": "help"}))
            .send()
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        let first: &Value = &answer.body[0];
        assert_eq!(first["type"], "paragraph");
        assert_eq!(
            first["children"][0],
            json!({"type": "text", "text": "help", "bold": true})
        );

        // A viewer may not run what could write; the template product has no
        // console beyond the built-ins; input is checked.
        let answer = partner
            .post(&repl)
            .user(&viewer)
            .json(&json!({"input": "flushall"}))
            .send()
            .await;
        assert_error(&answer, 403, "forbidden");
        let answer = partner
            .post(&repl)
            .user(&admin)
            .json(&json!({"input": "flushall"}))
            .send()
            .await;
        assert_error(&answer, 422, "unprocessable");
        let answer = partner
            .post(&repl)
            .user(&admin)
            .json(&json!({"readOnly": true}))
            .send()
            .await;
        assert_error(&answer, 400, "validation_error");
        assert_eq!(field_keys(&answer), vec!["input"]);
        let answer = partner
            .post(&format!(
                "{}/resources/res_0123456789abcdef0123456789abcdef/repl",
                installation_path(&installation)
            ))
            .user(&admin)
            .json(&json!({"input": "info"}))
            .send()
            .await;
        assert_error(&answer, 404, "not_found");
        let deleted = partner
            .delete(&resource_path(&installation, &resource_id))
            .user(&admin)
            .send()
            .await;
        assert_eq!(deleted.status, 204, "{}", deleted.text);
        let answer = partner
            .post(&repl)
            .user(&admin)
            .json(&json!({"input": "info"}))
            .send()
            .await;
        assert_error(&answer, 404, "not_found");
        let (other, other_admin) = vercel.install().await;
        let foreign = vercel
            .provision(
                &other,
                &other_admin,
                provision_body("database", "pro", "theirs", json!({"region": "iad1"})),
            )
            .await;
        let answer = partner
            .post(&format!(
                "{}/resources/{}/repl",
                installation_path(&installation),
                foreign["id"].as_str().unwrap()
            ))
            .user(&admin)
            .json(&json!({"input": "info"}))
            .send()
            .await;
        assert_error(&answer, 404, "not_found");
        vercel.stop().await;
    }
);
