//! Generated requests against every Vercel partner route (and the webhook
//! and the seed's flow) and Google's push and signup endpoints, over real
//! HTTP against the running set: made-up bodies (valid bodies with fields
//! replaced, random JSON of any depth and size, random bytes), headers
//! (valid tokens of the simulators mixed with flawed and garbage ones,
//! idempotency keys, content types) and ids. Whatever arrives, the gateway
//! answers below 500 and never drops the connection (a panic would).
//!
//! The cases are drawn from a seeded generator (`MARKETBRIDGE_FUZZ_SEED`
//! replays a run; every failure names its seed and case), 7,000 for Vercel
//! and 3,000 for Google in every run.

use crate::google_support::{Delivery, start_with};
use crate::vercel_support::{VercelOptions, provision_body, vercel_set};
use marketbridge_google::notification::encode_base64;
use marketbridge_simulators::vercel::TokenFlaw;
use marketbridge_storage::testing::{TestBackend, run_on};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// Requests in flight at once.
const WORKERS: u64 = 8;

fn seed() -> u64 {
    std::env::var("MARKETBRIDGE_FUZZ_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(rand::random)
}

/// Field names the contracts use, so generated objects often hit real
/// fields with wrong values.
const KNOWN_KEYS: &[&str] = &[
    "productId",
    "name",
    "metadata",
    "billingPlanId",
    "scopes",
    "acceptedPolicies",
    "credentials",
    "access_token",
    "token_type",
    "account",
    "contact",
    "email",
    "url",
    "id",
    "status",
    "plan",
    "type",
    "secrets",
    "reason",
    "input",
    "resourceIds",
    "claimId",
    "expiration",
    "billingPlan",
    "quantity",
    "eventId",
    "eventType",
    "providerId",
    "entitlement",
    "message",
    "data",
    "messageId",
    "subscription",
    "attributes",
    "region",
    "payload",
    "installationId",
    "deletedAt",
    "ticket",
];

/// Awkward text: empty, huge, unicode, control characters, path and query
/// punctuation, SQL and HTML.
fn text(rng: &mut StdRng) -> String {
    const PIECES: &[&str] = &[
        "",
        "a",
        "icfg_",
        "res_",
        "acc_01",
        "ü∑😀",
        "\u{0000}",
        "\u{202e}",
        "\n\r\t",
        "'; DROP TABLE accounts; --",
        "<script>alert(1)</script>",
        "../../etc/passwd",
        "%00%2F%3F",
        "?#&=",
        "\\",
        "\"",
        " ",
        "9999999999999999999999",
        "-1",
        "null",
        "true",
        "2026-11-23T12:00:00Z",
        "free",
        "database",
        "iad1",
    ];
    let mut out = String::new();
    for _ in 0..rng.gen_range(0..4) {
        out.push_str(PIECES.choose(rng).unwrap());
    }
    if rng.gen_ratio(1, 30) {
        out.push_str(&"x".repeat(rng.gen_range(256..5_000)));
    }
    if rng.gen_ratio(1, 4) {
        let length = rng.gen_range(1..40);
        out.extend((0..length).map(|_| rng.r#gen::<char>()));
    }
    out
}

fn number(rng: &mut StdRng) -> Value {
    match rng.gen_range(0..6) {
        0 => json!(0),
        1 => json!(rng.r#gen::<i64>()),
        2 => json!(u64::MAX),
        3 => json!(rng.r#gen::<f64>() * 1e300),
        4 => json!(-0.5),
        _ => json!(rng.gen_range(-10..1000)),
    }
}

/// Random JSON up to `depth` levels (deep enough to cross every limit).
fn random_json(rng: &mut StdRng, depth: usize) -> Value {
    let choice = if depth == 0 {
        rng.gen_range(0..4)
    } else {
        rng.gen_range(0..7)
    };
    match choice {
        0 => Value::Null,
        1 => json!(rng.r#gen::<bool>()),
        2 => number(rng),
        3 => json!(text(rng)),
        // Wide containers hold only scalars, so sizes stay bounded.
        4 if rng.gen_ratio(1, 40) => Value::Array(
            (0..rng.gen_range(100..3_000))
                .map(|_| random_json(rng, 0))
                .collect(),
        ),
        4 => Value::Array(
            (0..rng.gen_range(0..4))
                .map(|_| random_json(rng, depth - 1))
                .collect(),
        ),
        _ => {
            let (length, child_depth) = if rng.gen_ratio(1, 40) {
                (rng.gen_range(100..3_000), 0)
            } else {
                (rng.gen_range(0..6), depth - 1)
            };
            let mut map = Map::new();
            for i in 0..length {
                let key = if rng.gen_ratio(2, 3) {
                    (*KNOWN_KEYS.choose(rng).unwrap()).to_owned()
                } else {
                    format!("{}{i}", text(rng))
                };
                map.insert(key, random_json(rng, child_depth));
            }
            Value::Object(map)
        }
    }
}

/// JSON nested `levels` deep, in objects or arrays.
fn deep(rng: &mut StdRng) -> Value {
    let levels = rng.gen_range(8..140);
    let arrays = rng.r#gen::<bool>();
    (0..levels).fold(json!("leaf"), |inner, _| {
        if arrays {
            json!([inner])
        } else {
            json!({ "a": inner })
        }
    })
}

/// `valid` with some fields replaced, removed or added.
fn mutate(rng: &mut StdRng, valid: &Value) -> Value {
    let mut value = valid.clone();
    if let Value::Object(map) = &mut value {
        let keys: Vec<String> = map.keys().cloned().collect();
        for key in keys {
            match rng.gen_range(0..6) {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    map.insert(key, random_json(rng, 3));
                }
                2 if rng.gen_ratio(1, 3) => {
                    map.insert(key, deep(rng));
                }
                _ => {}
            }
        }
        if rng.gen_ratio(1, 3) {
            map.insert(
                (*KNOWN_KEYS.choose(rng).unwrap()).to_owned(),
                random_json(rng, 4),
            );
        }
    }
    value
}

/// A body: a mutation of a valid one, random JSON, deep JSON, or bytes.
fn body(rng: &mut StdRng, valid: &Value) -> Vec<u8> {
    match rng.gen_range(0..10) {
        0..=4 => mutate(rng, valid).to_string().into_bytes(),
        5 | 6 => random_json(rng, 6).to_string().into_bytes(),
        7 => deep(rng).to_string().into_bytes(),
        8 => {
            let mut text = valid.to_string();
            let cut = rng.gen_range(0..=text.len());
            while !text.is_char_boundary(cut.min(text.len())) {
                text.pop();
            }
            text.truncate(cut.min(text.len()));
            text.into_bytes()
        }
        _ => (0..rng.gen_range(0..300))
            .map(|_| rng.r#gen::<u8>())
            .collect(),
    }
}

/// An id: the real one, or something else.
fn id(rng: &mut StdRng, real: &str) -> String {
    if rng.gen_ratio(3, 5) {
        real.to_owned()
    } else {
        let raw = text(rng);
        url::form_urlencoded::byte_serialize(raw.as_bytes()).collect::<String>()
    }
}

fn method(rng: &mut StdRng, usual: &[&str]) -> reqwest::Method {
    if rng.gen_ratio(1, 12) {
        let odd = ["OPTIONS", "HEAD", "TRACE", "FROB", "PROPFIND", "PURGE"];
        return reqwest::Method::from_bytes(odd.choose(rng).unwrap().as_bytes()).unwrap();
    }
    reqwest::Method::from_bytes(usual.choose(rng).unwrap().as_bytes()).unwrap()
}

fn content_type(rng: &mut StdRng, usual: &'static str) -> Option<String> {
    match rng.gen_range(0..10) {
        0 => None,
        1 => Some("text/plain".to_owned()),
        2 => Some(text(rng)),
        3 => Some("application/x-www-form-urlencoded".to_owned()),
        _ => Some(usual.to_owned()),
    }
}

/// One generated request, described for failure messages.
struct Case {
    method: reqwest::Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Case {
    fn describe(&self, seed: u64, index: u64) -> String {
        let body = String::from_utf8_lossy(&self.body);
        let shown: String = body.chars().take(300).collect();
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(name, value)| format!("{name}: {}", value.chars().take(40).collect::<String>()))
            .collect();
        format!(
            "seed {seed} case {index}: {} {} {headers:?} body ({} bytes) {shown}",
            self.method,
            self.path,
            self.body.len()
        )
    }
}

/// Sends every case of `generate` from `WORKERS` tasks; panics on a 5xx or
/// a dropped connection.
async fn run_cases<G>(base_url: String, cases: u64, seed: u64, generate: G)
where
    G: Fn(&mut StdRng) -> Case + Send + Sync + 'static,
{
    let generate = Arc::new(generate);
    // A fresh connection per case: a kept-alive connection the gateway
    // closes after a refused body could be reused by the client in the
    // meantime, and that race must not pass for a dropped request.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..WORKERS {
        let (generate, http, base_url) = (generate.clone(), http.clone(), base_url.clone());
        workers.spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(worker));
            let mut index = worker;
            while index < cases {
                let case = generate(&mut rng);
                let mut request =
                    http.request(case.method.clone(), format!("{base_url}{}", case.path));
                for (name, value) in &case.headers {
                    request = request.header(name.as_str(), value.as_str());
                }
                let answer = request.body(case.body.clone()).send().await;
                let status = match answer {
                    Ok(answer) => answer.status().as_u16(),
                    Err(error) => panic!("{}: no answer: {error:?}", case.describe(seed, index)),
                };
                assert!(
                    status < 500,
                    "{}: answered {status}",
                    case.describe(seed, index)
                );
                index += WORKERS;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        if let Err(error) = done {
            std::panic::resume_unwind(error.into_panic());
        }
    }
}

fn header(rng: &mut StdRng, name: &str, value: String, headers: &mut Vec<(String, String)>) {
    if rng.gen_ratio(1, 12) {
        return;
    }
    // reqwest refuses header values with control characters; keep those to
    // bodies and ids.
    let printable: String = value.chars().filter(|c| !c.is_control()).collect();
    if reqwest::header::HeaderValue::from_str(&printable).is_ok() {
        headers.push((name.to_owned(), printable));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_vercel_calls_never_answer_5xx() {
    run_on(TestBackend::Sqlite, |database| async move {
        let vercel = vercel_set(&database, VercelOptions::default()).await;
        let (installation, admin) = vercel.install().await;
        let resource = vercel
            .provision(
                &installation,
                &admin,
                provision_body("database", "free", "fuzzed", json!({"region": "iad1"})),
            )
            .await;
        let resource_id = resource["id"].as_str().unwrap().to_owned();
        let sim = &vercel.sim;
        let mut tokens = vec![
            admin.clone(),
            admin.clone(),
            admin.clone(),
            sim.system_token(Some(&installation)),
            sim.system_token(None),
        ];
        for flaw in [
            TokenFlaw::UnknownKey,
            TokenFlaw::ForgedKey,
            TokenFlaw::AlgNone,
            TokenFlaw::Hs256,
        ] {
            tokens.push(sim.flawed_token(&installation, flaw));
        }
        let other = sim.new_installation();
        tokens.push(sim.admin_token(&other));
        let upsert = installation.upsert_body();
        let seed = seed();
        let installation_id = installation.id.clone();
        run_cases(vercel.url(""), 7_000, seed, move |rng| {
            let installation = id(rng, &installation_id);
            let resource = id(rng, &resource_id);
            let claim = id(rng, "claim-1");
            let (methods, path, valid): (&[&str], String, Value) = match rng.gen_range(0..16) {
                0 => (&["PUT", "GET", "PATCH", "DELETE"], format!("/v1/installations/{installation}"), upsert.clone()),
                1 => (&["GET"], format!("/v1/products/{}/plans", id(rng, "database")), json!({})),
                2 => (&["GET"], format!("/v1/installations/{installation}/plans"), json!({})),
                3 | 4 => (
                    &["POST", "GET"],
                    format!("/v1/installations/{installation}/resources"),
                    provision_body("database", "free", "fuzz", json!({"region": "iad1"})),
                ),
                5 => (
                    &["GET", "PATCH", "DELETE"],
                    format!("/v1/installations/{installation}/resources/{resource}"),
                    json!({"name": "renamed", "metadata": {"region": "fra1"}, "billingPlanId": "pro"}),
                ),
                6 => (&["GET"], format!("/v1/installations/{installation}/resources/{resource}/plans"), json!({})),
                7 => (
                    &["POST"],
                    format!("/v1/installations/{installation}/resources/{resource}/secrets/rotate"),
                    json!({"reason": "fuzz", "delayOldSecretsExpirationHours": 1}),
                ),
                8 => (
                    &["POST"],
                    format!("/v1/installations/{installation}/resources/{resource}/repl"),
                    json!({"input": "help", "readOnly": true}),
                ),
                9 => (
                    &["POST"],
                    format!("/v1/installations/{installation}/resource-transfer-requests"),
                    json!({"resourceIds": [resource], "expiration": 1_900_000_000_000_i64}),
                ),
                10 => (
                    &["PUT"],
                    format!("/v1/installations/{installation}/resource-transfer-requests/{claim}"),
                    json!({"resourceIds": [resource], "expiration": 1_900_000_000_000_i64}),
                ),
                11 => (
                    &["GET", "POST"],
                    format!("/v1/installations/{installation}/resource-transfer-requests/{claim}/verify"),
                    json!({"targetInstallationId": installation}),
                ),
                12 => (
                    &["POST"],
                    format!("/v1/installations/{installation}/resource-transfer-requests/{claim}/accept"),
                    json!({"targetInstallationId": installation, "billingPlanId": "free"}),
                ),
                13 => (
                    &["POST"],
                    format!("/v1/installations/{installation}/billing/provision"),
                    json!({"billingPlanId": "team", "invoiceId": "inv-1"}),
                ),
                14 => (
                    &["POST"],
                    "/webhook".to_owned(),
                    json!({"id": "evt-1", "type": "resource.deleted", "createdAt": 1, "payload": {"installationId": installation}}),
                ),
                _ => (
                    &["POST", "PUT", "GET", "DELETE", "PATCH"],
                    ["/marketplace/account", "/marketplace/plans", "/marketplace/resources"]
                        .choose(rng)
                        .unwrap()
                        .to_string(),
                    json!({"productId": "database", "name": "x", "metadata": {}}),
                ),
            };
            let mut path = path;
            if rng.gen_ratio(1, 10) {
                path.push_str(&format!("?{}", id(rng, "limit=10&cursor=x")));
            }
            let mut headers = Vec::new();
            let token = tokens.choose(rng).unwrap().clone();
            let bearer = if rng.gen_ratio(1, 10) { text(rng) } else { format!("Bearer {token}") };
            header(rng, "authorization", bearer, &mut headers);
            let kind = ["user", "system", "USER", "robot", ""].choose(rng).unwrap().to_string();
            header(rng, "x-vercel-auth", kind, &mut headers);
            if rng.gen_ratio(1, 2) {
                let key = text(rng);
                header(rng, "idempotency-key", key, &mut headers);
            }
            if let Some(content_type) = content_type(rng, "application/json") {
                header(rng, "content-type", content_type, &mut headers);
            }
            if rng.gen_ratio(1, 8) {
                let signature = text(rng);
                header(rng, "x-vercel-signature", signature, &mut headers);
            }
            Case {
                method: method(rng, methods),
                path,
                headers,
                body: body(rng, &valid),
            }
        })
        .await;
        vercel.test.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_google_pushes_and_signups_never_answer_5xx() {
    run_on(TestBackend::Sqlite, |database| async move {
        let google = start_with(&database, Delivery::Push, |_| {}).await;
        let sim = &google.sim;
        let config = &google.test.set.config.google;
        let (push_path, signup_path) = (config.push_path.clone(), config.signup_path.clone());
        let mut push_tokens = vec![sim.sign_push_claims(&sim.push_claims()); 3];
        let mut wrong = sim.push_claims();
        wrong["aud"] = json!("https://elsewhere.example");
        push_tokens.push(sim.sign_push_claims(&wrong));
        let signup_tokens: Vec<String> = ["acct-1", "acct-2", ""]
            .iter()
            .map(|account| sim.signup_token(account))
            .collect();
        let provider = sim.provider_id().to_owned();
        let (status, page) = google.open_signup(&signup_tokens[0]).await;
        assert_eq!(status, 200, "{page}");
        let ticket = crate::google_support::hidden_value(&page, "ticket").unwrap_or_default();
        let seed = seed();
        run_cases(google.test.url(""), 3_000, seed, move |rng| {
            let mut headers = Vec::new();
            match rng.gen_range(0..3) {
                0 => {
                    let event_type = *["ACCOUNT_ACTIVE", "ENTITLEMENT_CREATION_REQUESTED",
                        "ENTITLEMENT_CANCELLED", "ENTITLEMENT_PLAN_CHANGED", "NONSENSE"].choose(rng).unwrap();
                    let notification = json!({
                        "eventId": text(rng), "eventType": event_type,
                        "providerId": provider,
                        "account": {"id": id(rng, "acct-1"), "updateTime": "2026-11-23T12:00:00Z"},
                        "entitlement": {"id": id(rng, "ent-1"), "updateTime": "2026-11-23T12:00:00Z", "newPlan": text(rng)},
                    });
                    let data = match rng.gen_range(0..4) {
                        0 => encode_base64(mutate(rng, &notification).to_string().as_bytes()),
                        1 => encode_base64(random_json(rng, 5).to_string().as_bytes()),
                        2 => text(rng),
                        _ => encode_base64(notification.to_string().as_bytes()),
                    };
                    let envelope = json!({
                        "message": {"data": data, "messageId": text(rng), "publishTime": "2026-11-23T12:00:00.000Z",
                                    "attributes": random_json(rng, 2)},
                        "subscription": "projects/marketbridge-demo/subscriptions/marketbridge-push"
                    });
                    let token = push_tokens.choose(rng).unwrap().clone();
                    let bearer = if rng.gen_ratio(1, 10) { text(rng) } else { format!("Bearer {token}") };
                    header(rng, "authorization", bearer, &mut headers);
                    if let Some(content_type) = content_type(rng, "application/json") {
                        header(rng, "content-type", content_type, &mut headers);
                    }
                    Case {
                        method: method(rng, &["POST"]),
                        path: push_path.clone(),
                        headers,
                        body: body(rng, &envelope),
                    }
                }
                1 => {
                    let token = if rng.gen_ratio(4, 5) {
                        signup_tokens.choose(rng).unwrap().clone()
                    } else {
                        text(rng)
                    };
                    let mut form = url::form_urlencoded::Serializer::new(String::new());
                    form.append_pair("x-gcp-marketplace-token", &token);
                    for _ in 0..rng.gen_range(0..3) {
                        form.append_pair(&text(rng), &text(rng));
                    }
                    if let Some(content_type) = content_type(rng, "application/x-www-form-urlencoded") {
                        header(rng, "content-type", content_type, &mut headers);
                    }
                    let body = if rng.gen_ratio(4, 5) {
                        form.finish().into_bytes()
                    } else {
                        body(rng, &json!({"x-gcp-marketplace-token": token}))
                    };
                    Case {
                        method: method(rng, &["POST", "GET"]),
                        path: signup_path.clone(),
                        headers,
                        body,
                    }
                }
                _ => {
                    let mut form = url::form_urlencoded::Serializer::new(String::new());
                    let ticket = if rng.gen_ratio(1, 2) { ticket.clone() } else { text(rng) };
                    for (name, value) in [
                        ("ticket", ticket),
                        ("name", text(rng)),
                        ("email", if rng.r#gen() { "a@example.com".to_owned() } else { text(rng) }),
                        ("company", text(rng)),
                    ] {
                        if rng.gen_ratio(9, 10) {
                            form.append_pair(name, &value);
                        }
                    }
                    if let Some(content_type) = content_type(rng, "application/x-www-form-urlencoded") {
                        header(rng, "content-type", content_type, &mut headers);
                    }
                    Case {
                        method: method(rng, &["POST"]),
                        path: format!("{signup_path}/complete"),
                        headers,
                        body: form.finish().into_bytes(),
                    }
                }
            }
        })
        .await;
        google.stop().await;
    })
    .await;
}
