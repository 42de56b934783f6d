//! The Azure adapter against Microsoft's own emulator
//! (`microsoft/Commercial-Marketplace-SaaS-API-Emulator`), opt-in: set
//! `MARKETBRIDGE_TEST_AZURE_EMULATOR_URL` to a running emulator (README,
//! "Microsoft's emulator"); without it the test passes without doing
//! anything. Only the emulator's documented departures are configured: the
//! base URL, an unsigned access token naming our tenant and app, webhook
//! calls without a token.
//!
//! Walked: landing page with the emulator's raw base64 token → Resolve →
//! signup → Activate → `Subscribed`; a customer plan change (ChangePlan
//! webhook, accepted with PATCH `Success`) and one to a plan our catalog
//! lacks (PATCH `Failure`); Suspend, Reinstate, Unsubscribe.

use crate::azure_support::AzureTest;
use crate::support::set_on;
use base64::Engine;
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_storage::testing::{TestBackend, TestDatabase};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const TENANT: &str = "0f4a1b2c-3d4e-4f50-8a61-7b8c9d0e1f23";
const APP: &str = "9e8d7c6b-5a49-4382-a716-0f1e2d3c4b5a";

fn emulator() -> Option<String> {
    std::env::var("MARKETBRIDGE_TEST_AZURE_EMULATOR_URL")
        .ok()
        .map(|u| u.trim_end_matches('/').to_owned())
        .filter(|u| !u.is_empty())
}

async fn call(http: &reqwest::Client, request: reqwest::RequestBuilder) -> (u16, Value) {
    let _ = http;
    let response = request
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the emulator answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The emulator's view of a subscription.
async fn at_emulator(http: &reqwest::Client, base: &str, id: &str) -> Value {
    let publisher = format!("{TENANT}{APP}");
    call(
        http,
        http.get(format!(
            "{base}/api/util/publishers/{publisher}/subscriptions/{id}"
        )),
    )
    .await
    .1
}

async fn status_at_emulator(http: &reqwest::Client, base: &str, id: &str) -> String {
    let body = at_emulator(http, base, id).await;
    body.pointer("/subscription/saasSubscriptionStatus")
        .or_else(|| body.get("saasSubscriptionStatus"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

async fn plan_at_emulator(http: &reqwest::Client, base: &str, id: &str) -> String {
    let body = at_emulator(http, base, id).await;
    body.pointer("/subscription/planId")
        .or_else(|| body.get("planId"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Waits (the emulator applies changes after its own delays) until
/// `check` holds, draining our outboxes meanwhile.
async fn until<F, Fut>(azure: &AzureTest, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        // Our retries wait on the manual clock.
        azure.clock.advance(chrono::Duration::seconds(2));
        azure.test.drain().await;
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn the_adapter_works_against_microsofts_emulator() {
    let Some(base) = emulator() else {
        eprintln!("MARKETBRIDGE_TEST_AZURE_EMULATOR_URL is not set; skipped");
        return;
    };
    let database = TestDatabase::create(TestBackend::Sqlite)
        .await
        .expect("a SQLite database");
    let emulator_api = format!("{base}/api");
    let test = set_on(&database)
        .manual_clock()
        .without_workers()
        .configure(move |config| {
            config.azure.client_id = APP.into();
            config.azure.tenant_id = TENANT.into();
            config.azure.fulfillment_base_url = emulator_api.clone();
            config.azure.metering_base_url = emulator_api;
            config.azure.emulator_access_token = true;
            config.azure.insecure_accept_unsigned_webhooks = true;
            config.azure.webhook_app_id = String::new();
        })
        .start()
        .await;
    let clock = test.clock.clone().expect("a manual clock");
    // The simulator is not used; AzureTest only lends its helpers.
    let sim = Arc::new(
        marketbridge_simulators::azure::AzureSimulator::start(
            marketbridge_simulators::azure::AzureSimulatorOptions::new(Arc::new(clock.clone())),
        )
        .await
        .unwrap(),
    );
    let azure = AzureTest { test, sim, clock };
    let http = reqwest::Client::new();

    // The emulator offers our catalog's plans and calls our webhook.
    let plan = |id: &str, name: &str, per_seat: bool| {
        json!({"planId": id, "displayName": name, "isPrivate": false, "description": name,
               "hasFreeTrials": false, "isPricePerSeat": per_seat, "isStopSell": false, "market": "US",
               "planComponents": {"recurrentBillingTerms": [{"currency": "USD", "price": 20.0, "termUnit": "P1M", "termDescription": "1 month"}], "meteringDimensions": []}})
    };
    let offer = json!({"offerId": "database", "displayName": "Postgres Database", "persist": false, "publisher": "marketbridge", "builtIn": false,
        "plans": {"database-free": plan("database-free", "Free", false), "database-pro": plan("database-pro", "Pro", false), "database-enterprise": plan("database-enterprise", "Enterprise", false)}});
    let (status, _) = call(
        &http,
        http.post(format!("{base}/api/util/offers")).json(&offer),
    )
    .await;
    assert_eq!(status, 200);
    let webhook = azure.test.url(&azure.test.set.config.azure.webhook_path);
    let (status, _) = call(
        &http,
        http.patch(format!("{base}/api/util/config"))
            .json(&json!({"webhookUrl": webhook, "webhookCallPatchDelayMS": 3000})),
    )
    .await;
    assert_eq!(status, 200);

    // Purchase: the emulator's token is base64 of the subscription JSON,
    // put raw in the landing URL (its `+`, `/`, `=` unencoded).
    let id = uuid::Uuid::new_v4().to_string();
    let mut token = String::new();
    for pad in 0..3 {
        let properties = json!({"id": id, "name": format!("emulated{}", " ".repeat(pad)), "offerId": "database", "planId": "database-pro",
            "purchaser": {"emailId": "buyer@contoso.example", "objectId": uuid::Uuid::new_v4().to_string(), "tenantId": uuid::Uuid::new_v4().to_string()},
            "beneficiary": {"emailId": "buyer@contoso.example", "objectId": uuid::Uuid::new_v4().to_string(), "tenantId": uuid::Uuid::new_v4().to_string()}});
        token = base64::engine::general_purpose::STANDARD.encode(properties.to_string());
        if token.contains('+') || token.contains('/') {
            break;
        }
    }
    let landing = azure.test.url(&azure.test.set.config.azure.landing_path);
    let (status, final_url, page) = azure
        .open_landing(&format!("{landing}?token={token}"))
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(!final_url.contains("token="));
    azure.test.drain().await;
    assert_eq!(
        status_at_emulator(&http, &base, &id).await,
        "PendingFulfillmentStart"
    );
    let (status, done) = azure.submit_signup(&page).await;
    assert_eq!(status, 200, "{done}");
    until(&azure, "activation at the emulator", || async {
        status_at_emulator(&http, &base, &id).await == "Subscribed"
    })
    .await;
    until(&azure, "our subscription to be active", || async {
        azure.subscription(&id).await.is_some_and(|s| {
            s.state == provisioning_pb::SubscriptionState::Active as i32 && s.plan_id == "pro"
        })
    })
    .await;

    // The customer changes plan in the emulator: accepted (PATCH Success).
    let change = |plan: &'static str| {
        let http = http.clone();
        let base = base.clone();
        let id = id.clone();
        tokio::spawn(async move {
            // The emulator answers only when the change can be made.
            let _ = http
                .patch(format!("{base}/api/webhook/subscription/{id}"))
                .json(&json!({"planId": plan}))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
        })
    };
    change("database-free").await.unwrap();
    until(&azure, "the accepted plan change", || async {
        plan_at_emulator(&http, &base, &id).await == "database-free"
    })
    .await;
    until(&azure, "our plan to follow", || async {
        azure
            .subscription(&id)
            .await
            .is_some_and(|s| s.plan_id == "free")
    })
    .await;

    // A plan our catalog does not offer: refused (PATCH Failure).
    change("database-enterprise").await.unwrap();
    // Decide at once (well inside the emulator's window), then wait it out.
    for _ in 0..10 {
        azure.clock.advance(chrono::Duration::seconds(2));
        azure.test.drain().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    azure.test.drain().await;
    assert_eq!(plan_at_emulator(&http, &base, &id).await, "database-free");

    // Suspend, reinstate, unsubscribe.
    for (action, expected) in [
        ("suspend", "Suspended"),
        ("reinstate", "Subscribed"),
        ("unsubscribe", "Unsubscribed"),
    ] {
        let (status, _) = call(
            &http,
            http.post(format!("{base}/api/webhook/subscription/{id}/{action}")),
        )
        .await;
        assert_eq!(status, 202, "{action}");
        until(&azure, action, || async {
            status_at_emulator(&http, &base, &id).await == expected
        })
        .await;
    }
    until(&azure, "our subscription to be cancelled", || async {
        azure
            .subscription(&id)
            .await
            .is_some_and(|s| s.state == provisioning_pb::SubscriptionState::Cancelled as i32)
    })
    .await;
    azure.stop().await;
}
