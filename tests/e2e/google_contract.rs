//! The 2026-11 revision of Google's contract: the signup token in the query
//! string (verified, then taken out of the URL with a 303 to a page that
//! carries only our ticket), entitlements approved by a person in Producer
//! Portal (no approve call from marketbridge; state is re-read), and the A2A
//! Agent Card of an agent product served by the gateway.

use crate::google_support::{Delivery, GoogleTest, hidden_value, start};
use chrono::Duration as ChronoDuration;
use marketbridge_core::time::Clock;
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::provisioning::v1::SubscriptionState;
use marketbridge_simulators::google::{
    PRODUCT, SIGNUP_AUDIENCE, SIGNUP_ISSUER, state as google_state,
};
use marketbridge_storage::backend_test;
use marketbridge_storage::testing::TestDatabase;
use serde_json::json;

const TOKEN_PARAM: &str = "x-gcp-marketplace-token";

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client")
}

fn signup_url(google: &GoogleTest) -> String {
    google.test.url(&google.test.set.config.google.signup_path)
}

/// `GET {signup_path}?x-gcp-marketplace-token=…` without following.
async fn get_with_token(google: &GoogleTest, token: &str) -> reqwest::Response {
    no_redirects()
        .get(signup_url(google))
        .query(&[(TOKEN_PARAM, token)])
        .send()
        .await
        .expect("signup page answers")
}

backend_test!(
    google_signup_token_in_the_query_string_is_taken_out_of_the_url,
    |database| async move {
        let google = start(&database, Delivery::Push).await;
        let sim = &google.sim;
        let purchase = sim.purchase(PRODUCT, "pro-plan");
        google.settle().await;

        // Google's link with the token: a 303 to the same page without it.
        let token = sim.signup_token(&purchase.account_id);
        let redirect = get_with_token(&google, &token).await;
        assert_eq!(redirect.status(), 303);
        assert_eq!(redirect.headers()["referrer-policy"], "no-referrer");
        let location = redirect.headers()["location"].to_str().unwrap().to_owned();
        assert!(!location.contains(&token), "{location}");
        assert!(!location.contains(TOKEN_PARAM), "{location}");
        let signup_path = &google.test.set.config.google.signup_path;
        assert!(
            location.starts_with(&format!("{signup_path}?ticket=")),
            "{location}"
        );
        assert!(redirect.text().await.unwrap().is_empty());

        // The clean URL shows the form, which works as after Google's POST.
        let page = no_redirects()
            .get(google.test.url(&location))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        assert_eq!(page.headers()["referrer-policy"], "no-referrer");
        let page = page.text().await.unwrap();
        assert!(!page.contains(&token), "the token never reaches the page");
        assert!(page.contains(r#"name="name""#), "{page}");
        assert!(hidden_value(&page, "ticket").is_some());
        let (status, done) = google
            .submit_signup(&page, "Ada Lovelace", "ada@example.com", "Engines")
            .await;
        assert_eq!(status, 200, "{done}");
        assert!(done.contains("You are signed up"), "{done}");
        google.settle().await;
        assert_eq!(
            google.account(&purchase.account_id).await.signup_state,
            account_pb::SignupState::Approved as i32
        );
        assert_eq!(
            google
                .accepted_calls(&format!("{}:approve", purchase.entitlement_id))
                .len(),
            1
        );

        // A re-click with the token in the URL lands on the account's page.
        let again = get_with_token(&google, &sim.signup_token(&purchase.account_id)).await;
        assert_eq!(again.status(), 303);
        let location = again.headers()["location"].to_str().unwrap().to_owned();
        let page = reqwest::get(google.test.url(&location))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("You are signed up"), "{page}");

        // Appended to the URL of Google's POST: also verified and taken out.
        let second = sim.purchase(PRODUCT, "pro-plan");
        google.settle().await;
        let token = sim.signup_token(&second.account_id);
        let posted = no_redirects()
            .post(signup_url(&google))
            .query(&[(TOKEN_PARAM, token.as_str())])
            .form(&[(TOKEN_PARAM, token.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status(), 303);
        let location = posted.headers()["location"].to_str().unwrap().to_owned();
        assert!(!location.contains(&token), "{location}");

        // Two different tokens in one request are refused.
        let other = sim.signup_token(&purchase.account_id);
        let mixed = no_redirects()
            .post(signup_url(&google))
            .query(&[(TOKEN_PARAM, token.as_str())])
            .form(&[(TOKEN_PARAM, other.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(mixed.status(), 400);
        assert!(!mixed.text().await.unwrap().contains("<form"));

        // A bad token in the URL gets the refusal it gets in the POST.
        let now = google.clock.now().timestamp();
        let claims = json!({"iss": SIGNUP_ISSUER, "aud": SIGNUP_AUDIENCE, "sub": second.account_id,
            "iat": now, "exp": now + 300});
        let with = |claim: &str, value: serde_json::Value| {
            let mut changed = claims.clone();
            changed[claim] = value;
            sim.sign_signup_claims(&changed)
        };
        let bad = [
            ("expired", with("exp", json!(now - 120))),
            (
                "wrong audience",
                with("aud", json!("someone-else.example.com")),
            ),
            ("not a token", "garbage".to_owned()),
        ];
        for (what, token) in bad {
            let (posted_status, posted_page) = google.open_signup(&token).await;
            let in_url = get_with_token(&google, &token).await;
            assert_eq!(in_url.status().as_u16(), posted_status, "{what}");
            assert_eq!(posted_status, 401, "{what}");
            assert!(in_url.headers().get("location").is_none(), "{what}");
            let page = in_url.text().await.unwrap();
            assert_eq!(page, posted_page, "{what}: the same refusal");
            assert!(!page.contains("<form"), "{what}");
            assert!(!page.contains(&token), "{what}");
        }

        // Our ticket in the URL is checked like the form's.
        let ticket_url = |ticket: &str| {
            format!(
                "{}?{}",
                signup_url(&google),
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("ticket", ticket)
                    .finish()
            )
        };
        let sealed = location.split_once("ticket=").unwrap().1.to_owned();
        let sealed = url::form_urlencoded::parse(format!("t={sealed}").as_bytes())
            .next()
            .unwrap()
            .1
            .into_owned();
        let tampered = reqwest::get(ticket_url(&format!("{sealed}x")))
            .await
            .unwrap();
        assert_eq!(tampered.status(), 400);
        google.clock.advance(ChronoDuration::minutes(31));
        let stale = reqwest::get(ticket_url(&sealed)).await.unwrap();
        assert_eq!(stale.status(), 401);
        assert!(stale.text().await.unwrap().contains("expired"));
        assert_eq!(
            google.account(&second.account_id).await.signup_state,
            account_pb::SignupState::Pending as i32
        );
        google.assert_google_refused_nothing();
        google.stop().await;
    }
);

/// Calls to approve `entitlement_id`, with their statuses.
fn approve_calls(google: &GoogleTest, entitlement_id: &str) -> Vec<u16> {
    google
        .sim
        .api()
        .recorder
        .calls()
        .into_iter()
        .filter(|c| c.path.ends_with(&format!("{entitlement_id}:approve")))
        .map(|c| c.status)
        .collect()
}

async fn approved_in_producer_portal(database: TestDatabase, delivery: Delivery) {
    let google = start(&database, delivery).await;
    let sim = &google.sim;
    let first = sim.purchase(PRODUCT, "pro-plan");
    google.settle().await;
    google
        .sign_up(
            &first.account_id,
            "Ada Lovelace",
            "ada@example.com",
            "Engines",
        )
        .await;
    google.settle().await;
    assert_eq!(
        google.subscription_state(&first.entitlement_id).await,
        SubscriptionState::Active
    );
    let account = google.account(&first.account_id).await;

    // A private offer approved by a person in Producer Portal before we
    // even heard of it: we never call approve, and it proceeds normally.
    let offer = sim.purchase_for(&first.account_id, PRODUCT, "pro-plan");
    sim.approve_in_producer_portal(&offer.entitlement_id)
        .expect("Producer Portal approves");
    google.settle().await;
    assert_eq!(
        google.subscription_state(&offer.entitlement_id).await,
        SubscriptionState::Active
    );
    assert!(
        approve_calls(&google, &offer.entitlement_id).is_empty(),
        "marketbridge never called approve for it"
    );
    let subscription = google.subscription(&offer.entitlement_id).await.unwrap();
    let live: Vec<_> = google
        .resources(&account.id)
        .await
        .into_iter()
        .filter(|r| r.subscription_id == subscription.id)
        .collect();
    assert_eq!(live.len(), 1, "its resource is provisioned");
    google.assert_google_refused_nothing();

    // Approved in Producer Portal while our own approval is on its way: our
    // call is refused, the state is re-read, and nothing is stuck.
    let raced = sim.purchase_for(&first.account_id, PRODUCT, "pro-plan");
    google.deliver().await;
    let account_service = &google.test.set.account;
    account_service
        .domain()
        .outbox()
        .drain(account_service.job_handler().as_ref())
        .await
        .expect("the account outbox drains");
    sim.approve_in_producer_portal(&raced.entitlement_id)
        .expect("Producer Portal approves");
    // Our approval job runs before Google's ENTITLEMENT_ACTIVE arrives.
    let provisioning = &google.test.set.provisioning;
    provisioning
        .domain()
        .outbox()
        .drain(provisioning.job_handler().as_ref())
        .await
        .expect("the provisioning outbox drains");
    google.settle().await;
    assert_eq!(
        google.subscription_state(&raced.entitlement_id).await,
        SubscriptionState::Active
    );
    assert_eq!(
        approve_calls(&google, &raced.entitlement_id),
        [400],
        "our one approve call was refused, and not retried"
    );
    assert_eq!(
        sim.entitlement(&raced.entitlement_id).unwrap().state,
        google_state::ACTIVE
    );

    // The account itself is untouched: approved once, by our signup, and a
    // re-click still lands on its page.
    let account = google.account(&first.account_id).await;
    assert_eq!(
        account.signup_state,
        account_pb::SignupState::Approved as i32
    );
    assert_eq!(account.contact.unwrap().email, "ada@example.com");
    assert_eq!(
        google
            .accepted_calls(&format!("{}:approve", first.account_id))
            .len(),
        1
    );
    let (status, page) = google
        .open_signup(&sim.signup_token(&first.account_id))
        .await;
    assert_eq!(status, 200);
    assert!(page.contains("You are signed up"), "{page}");
    google.stop().await;
}

backend_test!(
    google_entitlements_approved_in_producer_portal_proceed_through_push,
    |database| async move { approved_in_producer_portal(database, Delivery::Push).await }
);

backend_test!(
    google_entitlements_approved_in_producer_portal_proceed_through_pull,
    |database| async move { approved_in_producer_portal(database, Delivery::Pull).await }
);

/// An agent product added to the built-in catalog.
const AGENT_PRODUCT: &str = r#"
[[products]]
id = "sql-helper"
name = "SQL helper"
description = "An agent that explains and tunes SQL."

  [products.agent]
  protocolVersion = "0.3.0"
  name = "SQL helper"
  description = "Explains and tunes SQL queries."
  url = "https://agent.example.com/a2a/v1"
  version = "1.2.0"
  defaultInputModes = ["text/plain"]
  defaultOutputModes = ["text/plain", "application/json"]
  preferredTransport = "JSONRPC"

  [products.agent.capabilities]
  streaming = true
  pushNotifications = false

  [products.agent.provider]
  organization = "Example Inc."
  url = "https://example.com"

  [[products.agent.skills]]
  id = "explain"
  name = "Explain a query"
  description = "Explains what an SQL query does and how it runs."
  tags = ["sql", "postgres"]
  examples = ["Why is this query slow?"]
"#;

backend_test!(
    google_agent_cards_are_served_from_the_catalog,
    |database| async move {
        let catalog = std::env::temp_dir().join(format!(
            "marketbridge-agent-catalog-{}.toml",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(
            &catalog,
            format!("{}\n{AGENT_PRODUCT}", marketbridge_catalog::BUILTIN_CATALOG),
        )
        .expect("catalog written");
        let path = catalog.display().to_string();
        let google = crate::google_support::start_with(&database, Delivery::Push, move |config| {
            config.catalog.path = path;
        })
        .await;
        let agents_path = google.test.set.config.google.agents_path.clone();
        let url = |product: &str| {
            google
                .test
                .url(&format!("{agents_path}/{product}/agent-card.json"))
        };

        let answer = reqwest::get(url("sql-helper")).await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.headers()["content-type"], "application/json");
        let card: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(
            card,
            json!({
                "protocolVersion": "0.3.0",
                "name": "SQL helper",
                "description": "Explains and tunes SQL queries.",
                "url": "https://agent.example.com/a2a/v1",
                "version": "1.2.0",
                "defaultInputModes": ["text/plain"],
                "defaultOutputModes": ["text/plain", "application/json"],
                "preferredTransport": "JSONRPC",
                "capabilities": {"streaming": true, "pushNotifications": false},
                "provider": {"organization": "Example Inc.", "url": "https://example.com"},
                "skills": [{
                    "id": "explain",
                    "name": "Explain a query",
                    "description": "Explains what an SQL query does and how it runs.",
                    "tags": ["sql", "postgres"],
                    "examples": ["Why is this query slow?"]
                }]
            })
        );
        marketbridge_catalog::check_agent_card("sql-helper", &card)
            .expect("the served card passes the same check");

        // A product that is no agent, and one that does not exist: 404.
        for product in ["database", "nothing-here"] {
            let answer = reqwest::get(url(product)).await.unwrap();
            assert_eq!(answer.status(), 404, "{product}");
            let body: serde_json::Value = answer.json().await.unwrap();
            assert_eq!(body["error"]["code"], "not_found", "{product}");
        }
        google.stop().await;
        let _ = std::fs::remove_file(catalog);
    }
);

backend_test!(
    google_signup_token_in_the_url_is_never_recorded_in_traces,
    |database| async move {
        let mut collector = fake_opentelemetry_collector::FakeCollectorServer::start()
            .await
            .expect("collector starts");
        let guard = marketbridge_telemetry::init(
            "marketbridge-google-token-test",
            &marketbridge_config::TelemetryOptions {
                otlp_endpoint: collector.endpoint(),
                log_filter: "debug,sqlx=warn,h2=warn,hyper=warn,tower=warn,hyper_util=warn"
                    .to_owned(),
                ..Default::default()
            },
        )
        .expect("telemetry starts");
        let google = start(&database, Delivery::Push).await;
        let sim = &google.sim;
        let purchase = sim.purchase(PRODUCT, "pro-plan");
        google.settle().await;
        let token = sim.signup_token(&purchase.account_id);
        let redirect = get_with_token(&google, &token).await;
        assert_eq!(redirect.status(), 303);
        let location = redirect.headers()["location"].to_str().unwrap().to_owned();
        let page = reqwest::get(google.test.url(&location))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let (status, _) = google
            .submit_signup(&page, "Ada Lovelace", "ada@example.com", "")
            .await;
        assert_eq!(status, 200);
        // A refused token in the URL is not recorded either.
        let refused = format!("{token}x");
        assert_eq!(get_with_token(&google, &refused).await.status(), 401);
        google.settle().await;
        google.stop().await;

        let flushing = tokio::task::spawn_blocking(move || guard.flush());
        let mut spans = Vec::new();
        while !flushing.is_finished() {
            spans.extend(
                collector
                    .exported_spans(1, std::time::Duration::from_millis(100))
                    .await,
            );
        }
        spans.extend(
            collector
                .exported_spans(1, std::time::Duration::from_millis(300))
                .await,
        );
        let signup_spans: Vec<_> = spans
            .iter()
            .filter(|s| s.name == "GET /google/signup")
            .collect();
        assert!(
            signup_spans.len() >= 3,
            "the signup requests were traced: {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        let (_, signature) = token.rsplit_once('.').unwrap();
        for span in &spans {
            let recorded = format!("{span:?}");
            assert!(
                !recorded.contains(signature) && !recorded.contains(TOKEN_PARAM),
                "span {} records the signup token: {recorded}",
                span.name
            );
        }
    }
);
