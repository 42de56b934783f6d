//! The Azure clients against the simulator over real HTTP: Entra tokens,
//! resolve and activate (repeatable), paging, plan changes and operations,
//! metering with per-item statuses, and webhook token verification.

use chrono::{TimeZone, Utc};
use marketbridge_azure::AzureClients;
use marketbridge_azure::clients::webhook_verifier;
use marketbridge_azure::fulfillment::OperationUpdate;
use marketbridge_azure::metering::{EventOutcome, outcome_of};
use marketbridge_azure::model::UsageEvent;
use marketbridge_config::Config;
use marketbridge_core::ErrorCode;
use marketbridge_core::crypto::SecretString;
use marketbridge_core::time::{Clock, ManualClock};
use marketbridge_simulators::azure::{AzureSimulator, AzureSimulatorOptions};
use serde_json::json;
use std::sync::Arc;

struct Setup {
    sim: AzureSimulator,
    clients: AzureClients,
    config: Config,
    clock: ManualClock,
}

async fn setup() -> Setup {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap());
    let sim = AzureSimulator::start(AzureSimulatorOptions::new(Arc::new(clock.clone())))
        .await
        .unwrap();
    let mut config = Config::default();
    sim.configure(&mut config);
    let clients = AzureClients::from_config(&config, Arc::new(clock.clone()))
        .unwrap()
        .expect("azure is configured");
    Setup {
        sim,
        clients,
        config,
        clock,
    }
}

#[tokio::test]
async fn a_purchase_resolves_activates_once_and_reads_back() {
    let s = setup().await;
    let purchase = s.sim.purchase("database-pro", Some(3));
    let fulfillment = s.clients.fulfillment();
    let resolved = fulfillment
        .resolve(&SecretString::new(purchase.token.clone()))
        .await
        .unwrap();
    assert_eq!(resolved.id, purchase.subscription_id);
    assert_eq!(resolved.plan_id.as_deref(), Some("database-pro"));
    assert_eq!(resolved.quantity, Some(3));
    let refused = fulfillment
        .resolve(&SecretString::new("not-a-token"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), ErrorCode::Unauthenticated);
    // A space where the token had a `+` is another token.
    let mangled = purchase.token.replace('+', " ");
    assert!(
        fulfillment
            .resolve(&SecretString::new(mangled))
            .await
            .is_err()
    );

    fulfillment
        .activate(&purchase.subscription_id, "database-pro", Some(3))
        .await
        .unwrap();
    // Microsoft refuses the second activation; it is still a success.
    fulfillment
        .activate(&purchase.subscription_id, "database-pro", Some(3))
        .await
        .unwrap();
    let wrong_plan = fulfillment
        .activate(&purchase.subscription_id, "database-free", None)
        .await;
    assert!(wrong_plan.is_err());
    let current = fulfillment
        .get_subscription(&purchase.subscription_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.status(), "Subscribed");
    assert!(
        fulfillment
            .get_subscription("00000000-0000-0000-0000-000000000000")
            .await
            .unwrap()
            .is_none()
    );
    // One token for all of it.
    let token_calls = s.sim.api().recorder.calls_to("POST", "/oauth2/token");
    assert_eq!(token_calls.len(), 1);
    let api_calls = s
        .sim
        .api()
        .recorder
        .calls_to("GET", "/api/saas/subscriptions/");
    assert!(
        api_calls
            .iter()
            .all(|c| c.query.contains("api-version=2018-08-31")
                && c.header("x-ms-requestid").is_some()
                && c.header("x-ms-correlationid").is_some())
    );
}

#[tokio::test]
async fn listing_follows_next_links_and_changes_go_through_operations() {
    let s = setup().await;
    let fulfillment = s.clients.fulfillment();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let purchase = s.sim.purchase("database-free", None);
        fulfillment
            .activate(&purchase.subscription_id, "database-free", None)
            .await
            .unwrap();
        ids.push(purchase.subscription_id);
    }
    let listed = fulfillment.list_subscriptions().await.unwrap();
    assert_eq!(listed.len(), 5);
    let plans = fulfillment.list_available_plans(&ids[0]).await.unwrap();
    assert!(plans.iter().any(|p| p.plan_id == "database-pro"));

    let location = fulfillment
        .change_plan(&ids[0], "database-pro")
        .await
        .unwrap();
    let operation = fulfillment
        .get_operation_at(&location)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(operation.status, "Succeeded");
    assert!(!operation.from_azure());
    assert_eq!(s.sim.subscription(&ids[0]).unwrap().plan_id, "database-pro");

    // A customer's change waits for us; a late decision finds it settled.
    let op = s.sim.change_plan(&ids[1], "database-pro").unwrap();
    let waiting = fulfillment.list_operations(&ids[1]).await.unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(
        fulfillment
            .update_operation(&ids[1], &op, false)
            .await
            .unwrap(),
        OperationUpdate::Taken
    );
    assert_eq!(
        s.sim.subscription(&ids[1]).unwrap().plan_id,
        "database-free"
    );
    assert_eq!(
        fulfillment
            .update_operation(&ids[1], &op, true)
            .await
            .unwrap(),
        OperationUpdate::AlreadySettled
    );

    assert!(
        fulfillment
            .delete_subscription(&ids[2])
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(s.sim.subscription(&ids[2]).unwrap().status, "Unsubscribed");
    let _ = &s.clock;
}

#[tokio::test]
async fn metering_answers_per_event_and_duplicates_count_as_delivered() {
    let s = setup().await;
    let fulfillment = s.clients.fulfillment();
    let purchase = s.sim.purchase("database-pro", Some(1));
    fulfillment
        .activate(&purchase.subscription_id, "database-pro", Some(1))
        .await
        .unwrap();
    s.clock.advance(chrono::Duration::hours(2));
    let event = |dimension: &str, hour: &str, quantity: f64| UsageEvent {
        resource_id: purchase.subscription_id.clone(),
        quantity,
        dimension: dimension.into(),
        effective_start_time: hour.into(),
        plan_id: "database-pro".into(),
    };
    let batch = vec![
        event("requests", "2026-11-23T12:00:00Z", 10.0),
        event("storage_gb", "2026-11-23T12:00:00Z", 2.0),
        event("nope", "2026-11-23T12:00:00Z", 2.0),
        event("requests", "2026-11-21T12:00:00Z", 2.0),
    ];
    let answer = s.clients.metering().send_batch(&batch).await.unwrap();
    let statuses: Vec<_> = answer.result.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(
        statuses,
        ["Accepted", "Accepted", "InvalidDimension", "Expired"]
    );
    let again = s.clients.metering().send_batch(&batch[..1]).await.unwrap();
    assert_eq!(again.result[0].status, "Duplicate");
    assert_eq!(outcome_of(&again.result[0].status), EventOutcome::Delivered);
    assert_eq!(outcome_of("Expired"), EventOutcome::Refused);
    assert_eq!(s.sim.usage().len(), 2);
    let too_many = vec![batch[0].clone(); 26];
    assert!(s.clients.metering().send_batch(&too_many).await.is_err());
}

#[tokio::test]
async fn webhook_tokens_are_checked_claim_by_claim() {
    let s = setup().await;
    let verifier = webhook_verifier(&s.config, Arc::new(s.clock.clone()))
        .unwrap()
        .unwrap();
    let valid = s.sim.sign_webhook_claims(&s.sim.webhook_claims());
    verifier
        .verify_header(Some(&format!("Bearer {valid}")))
        .await
        .unwrap();
    let forged = |change: serde_json::Value| {
        let mut claims = s.sim.webhook_claims();
        for (key, value) in change.as_object().unwrap() {
            claims[key] = value.clone();
        }
        s.sim.sign_webhook_claims(&claims)
    };
    for (claims, reason) in [
        (json!({"aud": "someone-else"}), "audience"),
        (json!({"tid": "another-tenant"}), "tenant"),
        (json!({"appid": "another-app"}), "app"),
        (json!({"iss": "https://evil.example/"}), "issuer"),
        (json!({"exp": s.clock.now().timestamp() - 120}), "expired"),
        (
            json!({"nbf": s.clock.now().timestamp() + 600}),
            "not_yet_valid",
        ),
    ] {
        let rejected = verifier
            .verify_header(Some(&format!("Bearer {}", forged(claims))))
            .await
            .unwrap_err();
        assert_eq!(rejected.reason, reason);
    }
    assert_eq!(
        verifier.verify_header(None).await.unwrap_err().reason,
        "missing"
    );
    // Signed by a key the tenant does not publish.
    let stranger = marketbridge_simulators::common::SigningKey::generate("stranger");
    let rejected = verifier
        .verify(&stranger.sign(&s.sim.webhook_claims()))
        .await
        .unwrap_err();
    assert_eq!(rejected.reason, "unknown_key");
    // Same kid, another key: the signature fails.
    let imposter = marketbridge_simulators::common::SigningKey::generate(
        jsonwebtoken::decode_header(&valid).unwrap().kid.unwrap(),
    );
    let rejected = verifier
        .verify(&imposter.sign(&s.sim.webhook_claims()))
        .await
        .unwrap_err();
    assert_eq!(rejected.reason, "signature");
    // Unsigned ("alg": "none").
    let rejected = verifier
        .verify("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJ0aWQiOiJ4In0.")
        .await
        .unwrap_err();
    assert!(rejected.reason == "malformed" || rejected.reason == "algorithm");
}
