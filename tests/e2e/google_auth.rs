//! Forged, expired, wrong-audience and wrong-issuer tokens are refused with
//! clear errors: on the Pub/Sub push endpoint (JSON, 401/403, nothing
//! recorded) and on the signup page (HTML pages, nothing approved); bad
//! envelopes get a 400, and a tampered or stale signup form is refused.

use crate::google_support::{Delivery, GoogleTest, hidden_value, start};
use chrono::Duration as ChronoDuration;
use marketbridge_core::time::Clock;
use marketbridge_google::notification::encode_base64;
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_simulators::common::SigningKey;
use marketbridge_simulators::google::{PRODUCT, SIGNUP_AUDIENCE, SIGNUP_ISSUER};
use marketbridge_storage::backend_test;
use serde_json::{Value, json};

async fn push(google: &GoogleTest, authorization: Option<String>, body: &Value) -> (u16, Value) {
    let mut request = google
        .test
        .http
        .post(google.test.url(&google.test.set.config.google.push_path))
        .json(body);
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.expect("push endpoint answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn envelope(data: &Value) -> Value {
    json!({
        "message": {"data": encode_base64(data.to_string().as_bytes()), "messageId": "1", "message_id": "1",
                    "publishTime": "2026-11-23T12:00:00.000Z", "publish_time": "2026-11-23T12:00:00.000Z"},
        "subscription": "projects/marketbridge-demo/subscriptions/marketbridge-push"
    })
}

async fn recorded_events(google: &GoogleTest) -> usize {
    google
        .test
        .set
        .clients
        .account
        .clone()
        .list_marketplace_events(account_pb::ListMarketplaceEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events
        .len()
}

backend_test!(
    google_push_tokens_and_envelopes_are_checked,
    |database| async move {
        let google = start(&database, Delivery::Push).await;
        let sim = &google.sim;
        let notification = json!({"eventId": "ACCOUNT_ACTIVE-1", "eventType": "ACCOUNT_ACTIVE",
        "providerId": sim.provider_id(), "account": {"id": "acct-x", "updateTime": "2026-11-23T12:00:00Z"}});
        let body = envelope(&notification);
        let bearer = |token: String| Some(format!("Bearer {token}"));

        let (status, answer) = push(&google, None, &body).await;
        assert_eq!(status, 401);
        assert_eq!(answer["error"]["code"], "unauthenticated");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Authorization"),
            "{answer}"
        );

        let forged = SigningKey::generate("google-oidc-1").sign(&sim.push_claims());
        let now = google.clock.now().timestamp();
        let mut cases: Vec<(&str, String, u16, &str)> = vec![("forged", forged, 401, "signature")];
        let with = |claim: &str, value: Value| {
            let mut claims = sim.push_claims();
            claims[claim] = value;
            sim.sign_push_claims(&claims)
        };
        cases.push(("expired", with("exp", json!(now - 300)), 401, "expired"));
        cases.push((
            "wrong audience",
            with("aud", json!("https://elsewhere.example/push")),
            401,
            "audience",
        ));
        cases.push((
            "wrong issuer",
            with("iss", json!("https://issuer.example")),
            401,
            "issuer",
        ));
        cases.push((
            "wrong account",
            with("email", json!("intruder@example.com")),
            403,
            "service account",
        ));
        cases.push((
            "unverified",
            with("email_verified", json!(false)),
            403,
            "not verified",
        ));
        for (what, token, expected, fragment) in cases {
            let (status, answer) = push(&google, bearer(token), &body).await;
            assert_eq!(status, expected, "{what}: {answer}");
            let message = answer["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(fragment), "{what}: {message}");
        }
        assert_eq!(
            recorded_events(&google).await,
            0,
            "nothing forged was recorded"
        );

        // A genuine token with a bad envelope is a 400, never a 5xx.
        let good = || bearer(sim.sign_push_claims(&sim.push_claims()));
        let bad_bodies = [
            ("not an envelope", json!({"hello": "world"})),
            (
                "not base64",
                json!({"message": {"data": "%%%", "messageId": "2"}}),
            ),
            (
                "not JSON",
                json!({"message": {"data": encode_base64(b"plain text"), "messageId": "3"}}),
            ),
            (
                "no eventId",
                envelope(&json!({"account": {"id": "acct-x"}})),
            ),
            (
                "no subject",
                envelope(&json!({"eventId": "E-1", "eventType": "ACCOUNT_ACTIVE"})),
            ),
        ];
        for (what, bad) in bad_bodies {
            let (status, answer) = push(&google, good(), &bad).await;
            assert_eq!(status, 400, "{what}: {answer}");
            assert_eq!(answer["error"]["code"], "validation_error", "{what}");
        }
        assert_eq!(recorded_events(&google).await, 0);

        // A genuine delivery is recorded once; a redelivery is acknowledged.
        let (status, answer) = push(&google, good(), &body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["duplicate"], false);
        let (status, answer) = push(&google, good(), &body).await;
        assert_eq!(status, 200);
        assert_eq!(answer["duplicate"], true);
        assert_eq!(recorded_events(&google).await, 1);
        google.stop().await;
    }
);

backend_test!(
    google_signup_tokens_and_forms_are_checked,
    |database| async move {
        let google = start(&database, Delivery::Push).await;
        let sim = &google.sim;
        let purchase = sim.purchase(PRODUCT, "pro-plan");
        google.settle().await;

        let visit = google
            .test
            .http
            .get(google.test.url(&google.test.set.config.google.signup_path))
            .send()
            .await
            .unwrap();
        assert_eq!(visit.status(), 400);
        assert!(
            visit
                .text()
                .await
                .unwrap()
                .contains("Start from Google Cloud Marketplace")
        );

        let now = google.clock.now().timestamp();
        let claims = json!({"iss": SIGNUP_ISSUER, "aud": SIGNUP_AUDIENCE, "sub": purchase.account_id,
        "iat": now, "exp": now + 300});
        let with = |claim: &str, value: Value| {
            let mut changed = claims.clone();
            changed[claim] = value;
            sim.sign_signup_claims(&changed)
        };
        let cases = [
            (
                "forged",
                SigningKey::generate("cloud-commerce-partner-1").sign(&claims),
                "not valid",
            ),
            ("expired", with("exp", json!(now - 120)), "expired"),
            (
                "wrong audience",
                with("aud", json!("someone-else.example.com")),
                "not valid",
            ),
            (
                "wrong issuer",
                with("iss", json!("https://accounts.google.com")),
                "not valid",
            ),
            ("no subject", with("sub", json!("")), "not valid"),
            ("not a token", "garbage".to_owned(), "not valid"),
        ];
        for (what, token, fragment) in cases {
            let (status, page) = google.open_signup(&token).await;
            assert_eq!(status, 401, "{what}: {page}");
            assert!(page.contains(fragment), "{what}: {page}");
            assert!(!page.contains("<form"), "{what}: no form for a bad token");
        }
        let (status, page) = google.open_signup("").await;
        assert_eq!(status, 400, "{page}");

        // A genuine token shows the form; a tampered ticket is refused.
        let (status, page) = google
            .open_signup(&sim.signup_token(&purchase.account_id))
            .await;
        assert_eq!(status, 200);
        let ticket = hidden_value(&page, "ticket").unwrap();
        let tampered = page.replace(&ticket, &format!("{ticket}x"));
        let (status, refused) = google
            .submit_signup(&tampered, "Mallory", "mallory@example.com", "")
            .await;
        assert_eq!(status, 400, "{refused}");
        assert!(refused.contains("not valid"));

        // Invalid input re-shows the form with the message and the same ticket.
        let (status, again) = google
            .submit_signup(&page, "Grace Hopper", "not-an-address", "Navy")
            .await;
        assert_eq!(status, 400);
        assert!(again.contains("valid e-mail address"), "{again}");
        assert_eq!(hidden_value(&again, "ticket").unwrap(), ticket);
        assert!(again.contains("Grace Hopper"), "values are kept");
        assert!(
            google.accepted_calls(":approve").is_empty(),
            "nothing approved yet"
        );

        // A form left open too long expires.
        google.clock.advance(ChronoDuration::minutes(31));
        let (status, stale) = google
            .submit_signup(&page, "Grace Hopper", "grace@example.com", "Navy")
            .await;
        assert_eq!(status, 401, "{stale}");
        assert!(stale.contains("expired"));
        let account = google.account(&purchase.account_id).await;
        assert_eq!(
            account.signup_state,
            account_pb::SignupState::Pending as i32
        );

        // A fresh link works, and HTML in the input is shown escaped.
        let (status, page) = google
            .open_signup(&sim.signup_token(&purchase.account_id))
            .await;
        assert_eq!(status, 200);
        let (_, early) = google
            .open_signup(&sim.signup_token(&purchase.account_id))
            .await;
        let (status, done) = google
            .submit_signup(&page, "<b>Grace</b>", "grace@example.com", "Navy")
            .await;
        assert_eq!(status, 200, "{done}");
        assert!(done.contains("&lt;b&gt;Grace&lt;/b&gt;") && !done.contains("<b>Grace</b>"));
        google.settle().await;
        assert_eq!(
            google.account(&purchase.account_id).await.signup_state,
            account_pb::SignupState::Approved as i32
        );
        // A used form cannot be sent again with other values, and a form
        // opened before the signup was accepted cannot rewrite it.
        let (status, reused) = google
            .submit_signup(&page, "Mallory", "mallory@example.com", "Evil")
            .await;
        assert_eq!(status, 409, "{reused}");
        assert!(reused.contains("already used"), "{reused}");
        let (status, late) = google
            .submit_signup(&early, "Mallory", "mallory@example.com", "Evil")
            .await;
        assert_eq!(status, 409, "{late}");
        assert!(late.contains("already signed up"), "{late}");
        let contact = google
            .account(&purchase.account_id)
            .await
            .contact
            .expect("a contact");
        assert_eq!(contact.email, "grace@example.com");

        // Coming back later (a re-click) needs no second approval.
        let (status, page) = google
            .open_signup(&sim.signup_token(&purchase.account_id))
            .await;
        assert_eq!(status, 200);
        assert!(page.contains("You are signed up"), "{page}");
        google.settle().await;
        assert_eq!(
            google
                .accepted_calls(&format!("{}:approve", purchase.account_id))
                .len(),
            1
        );
        google.assert_google_refused_nothing();
        google.stop().await;
    }
);
