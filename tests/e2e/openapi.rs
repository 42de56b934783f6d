//! The gateway's OpenAPI document (`GET /openapi.json`) against the router
//! that serves it: the document is OpenAPI 3.1 and whole (every `$ref`
//! resolves, every path parameter is declared, operation ids are unique),
//! every documented operation is served, no undocumented method is, and no
//! route is added to the router outside the declarations the document is
//! built from. Then schemathesis (the binary `MARKETBRIDGE_TEST_SCHEMATHESIS`
//! names; CI sets it) fuzzes every operation from the document with valid
//! Vercel tokens from the simulator: no 5xx, no answer outside its schema.

use crate::google_support::{self, Delivery, GoogleTest};
use crate::vercel_support::installation_path;
use marketbridge_simulators::vercel::{InstallationHandle, VercelSimulator};
use marketbridge_storage::testing::{TestBackend, TestDatabase, run_on};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// Methods a route may serve (HEAD comes with GET in axum).
const METHODS: [&str; 5] = ["get", "put", "post", "patch", "delete"];

/// The set with both marketplaces configured: Vercel played by its
/// simulator, Google by its own (push delivery), so every route is served.
struct Served {
    google: GoogleTest,
    vercel: VercelSimulator,
}

async fn start(database: &TestDatabase) -> Served {
    let vercel = VercelSimulator::start_default()
        .await
        .expect("the Vercel simulator starts");
    let settings = (
        vercel.issuer(),
        vercel.jwks_url(),
        vercel.url().to_owned(),
        vercel.client_id().to_owned(),
        vercel.client_secret().to_owned(),
    );
    let google = google_support::start_with(database, Delivery::Push, move |config| {
        config.vercel.oidc_issuer = settings.0;
        config.vercel.jwks_url = settings.1;
        config.vercel.api_base_url = settings.2;
        config.vercel.client_id = settings.3;
        config.vercel.client_secret = settings.4;
    })
    .await;
    Served { google, vercel }
}

impl Served {
    fn url(&self, path: &str) -> String {
        self.google.test.url(path)
    }

    async fn document(&self) -> Value {
        let answer = reqwest::get(self.url("/openapi.json"))
            .await
            .expect("the document answers");
        assert_eq!(answer.status(), 200);
        assert!(
            answer
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json")),
            "the document is JSON"
        );
        answer.json().await.expect("the document parses as JSON")
    }
}

/// Every `(method, path template)` the document lists.
fn operations(document: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method).is_some() {
                found.push((method.to_owned(), path.clone()));
            }
        }
    }
    found
}

/// `$ref`s anywhere under `value`.
fn references(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(target)) => into.push(target.clone()),
                    _ => references(inner, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| references(item, into)),
        _ => {}
    }
}

/// The document is OpenAPI 3.1 and holds together.
fn assert_whole(document: &Value) {
    let version = document["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.1."), "OpenAPI 3.1, not {version}");
    assert!(
        document["info"]["title"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    assert!(
        document["info"]["version"]
            .as_str()
            .is_some_and(|v| !v.is_empty())
    );
    let mut targets = Vec::new();
    references(document, &mut targets);
    assert!(!targets.is_empty(), "schemas are shared through components");
    for target in &targets {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("a local schema reference: {target}"));
        assert!(
            document["components"]["schemas"].get(name).is_some(),
            "{target} resolves"
        );
    }
    for scheme in [
        "vercel_oidc",
        "vercel_auth_style",
        "vercel_signature",
        "google_push",
    ] {
        assert!(
            document["components"]["securitySchemes"]
                .get(scheme)
                .is_some(),
            "security scheme {scheme}"
        );
    }
    let mut ids = BTreeSet::new();
    for (method, path) in operations(document) {
        let operation = &document["paths"][&path][&method];
        let id = operation["operationId"].as_str().expect("an operation id");
        assert!(ids.insert(id.to_owned()), "operation id {id} is unique");
        let declared: BTreeSet<&str> = operation["parameters"]
            .as_array()
            .map(|parameters| {
                parameters
                    .iter()
                    .filter(|p| p["in"] == "path")
                    .inspect(|p| assert_eq!(p["required"], true, "{method} {path}"))
                    .filter_map(|p| p["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        let templated: BTreeSet<&str> = path
            .split('{')
            .skip(1)
            .filter_map(|part| part.split('}').next())
            .collect();
        assert_eq!(declared, templated, "path parameters of {method} {path}");
        let responses = operation["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} has responses"));
        assert!(!responses.is_empty(), "{method} {path} has responses");
        for (status, response) in responses {
            assert!(
                response["description"].as_str().is_some(),
                "{method} {path} {status} is described"
            );
        }
    }
}

/// A concrete path for a template: each parameter filled in.
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("a closed parameter") + start;
        out.push_str("probe");
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// True when the router itself answered: no route for the path (404) or
/// none for the method (405), both without a body. Every handler's own
/// 404 carries its error body or page.
async fn unrouted(http: &reqwest::Client, method: &str, url: &str) -> (bool, u16) {
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
    let answer = http
        .request(method, url)
        .send()
        .await
        .expect("the gateway answers");
    let status = answer.status().as_u16();
    let body = answer.bytes().await.expect("the body");
    ((status == 404 || status == 405) && body.is_empty(), status)
}

/// The router is built only from `utoipa_axum::routes!` declarations (each
/// a documented handler): nothing in the gateway adds a route around them.
#[test]
fn the_gateway_adds_no_route_outside_the_documented_declarations() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway/src");
    let mut files = vec![root];
    let mut offending = Vec::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(
                std::fs::read_dir(&path)
                    .expect("a source folder")
                    .map(|entry| entry.expect("an entry").path()),
            );
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("a source file");
        for (number, line) in source.lines().enumerate() {
            let undocumented = [
                ".route(",
                ".route_service(",
                ".nest(",
                ".nest_service(",
                ".fallback(",
                ".fallback_service(",
                "routing::",
            ];
            if undocumented.iter().any(|needle| line.contains(needle)) {
                offending.push(format!(
                    "{}:{}: {}",
                    path.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        offending.is_empty(),
        "routes must be declared with utoipa_axum::routes! over #[utoipa::path] handlers so \
         /openapi.json lists them; found:\n{}",
        offending.join("\n")
    );
}

/// The document is whole, and it and the router agree both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_and_the_router_list_the_same_routes() {
    run_on(TestBackend::Sqlite, |database| async move {
        let served = start(&database).await;
        let document = served.document().await;
        assert_whole(&document);
        let listed = operations(&document);
        let paths: BTreeSet<&str> = listed.iter().map(|(_, path)| path.as_str()).collect();
        for expected in [
            "/healthz",
            "/readyz",
            "/openapi.json",
            "/vercel/v1/installations/{installation_id}",
            "/vercel/v1/installations/{installation_id}/resources/{resource_id}/repl",
            "/vercel/webhook",
            "/vercel/sso",
            "/vercel/dashboard/{installation_id}",
            "/vercel/marketplace/account",
            "/google/pubsub",
            "/google/signup",
            "/google/signup/complete",
        ] {
            assert!(paths.contains(expected), "{expected} is documented");
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let listed: BTreeSet<(String, String)> = listed.iter().cloned().collect();
        for path in &paths {
            let url = served.url(&concrete(path));
            for method in METHODS {
                let documented = listed.contains(&(method.to_owned(), (*path).to_owned()));
                let (router_answered, status) = unrouted(&http, method, &url).await;
                if documented {
                    assert!(
                        !router_answered,
                        "documented {method} {path} is served (the router answered {status})"
                    );
                } else {
                    assert_eq!(
                        status, 405,
                        "{method} {path} is not documented, so it is not served"
                    );
                }
            }
        }
        // A body over the limit gets the documented 413 with a JSON error
        // body, on the partner API, the flow, Google's push and a page.
        for path in [
            "/vercel/v1/installations/{installation_id}/resources",
            "/vercel/marketplace/resources",
            "/google/pubsub",
            "/google/signup/complete",
        ] {
            let answer = http
                .post(served.url(&concrete(path)))
                .header("content-type", "application/json")
                .body(vec![b' '; 1_100_000])
                .send()
                .await
                .expect("the gateway answers");
            assert_eq!(answer.status(), 413, "{path}");
            assert!(
                document["paths"][path]["post"]["responses"]["413"].is_object(),
                "{path} documents its 413"
            );
            let body: Value = answer.json().await.expect("a JSON error body");
            assert_eq!(body["error"]["code"], "payload_too_large", "{path}");
        }
        // A path outside the document is not served.
        let (router_answered, status) =
            unrouted(&http, "get", &served.url("/vercel/v2/nothing")).await;
        assert!(router_answered && status == 404);
        served.google.stop().await;
    })
    .await;
}

fn schemathesis_binary() -> Option<String> {
    std::env::var("MARKETBRIDGE_TEST_SCHEMATHESIS")
        .ok()
        .filter(|path| !path.trim().is_empty())
}

/// Installs an installation through the partner API, as Vercel does; it
/// and an admin token for it.
async fn install(served: &Served) -> (InstallationHandle, String) {
    let installation = served.vercel.new_installation();
    let token = served.vercel.admin_token(&installation);
    let partner = served.vercel.partner(&served.url("/vercel"));
    let answer = partner
        .put(&installation_path(&installation))
        .user(&token)
        .json(&installation.upsert_body())
        .send()
        .await;
    assert_eq!(answer.status, 204, "{}", answer.text);
    (installation, token)
}

/// Provisions a resource of the built-in `database` product; its id.
async fn provision(served: &Served, installation: &InstallationHandle, token: &str) -> String {
    let partner = served.vercel.partner(&served.url("/vercel"));
    let answer = partner
        .post(&format!("{}/resources", installation_path(installation)))
        .user(token)
        .json(&json!({
            "productId": "database",
            "name": "fuzzed",
            "metadata": {"region": "fra1"},
            "billingPlanId": "free",
        }))
        .send()
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.body["id"]
        .as_str()
        .expect("a resource id")
        .to_owned()
}

/// The document with path parameters pinned to what exists (the token's
/// installation, its resource, a product), so generated calls get past
/// authorization and lookups and reach the services.
fn pinned(mut document: Value, pins: &[(&str, &str)]) -> Value {
    let Some(paths) = document["paths"].as_object_mut() else {
        return document;
    };
    for item in paths.values_mut() {
        for method in METHODS {
            let Some(parameters) = item
                .get_mut(method)
                .and_then(|operation| operation.get_mut("parameters"))
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            for parameter in parameters {
                for (name, value) in pins {
                    if parameter["in"] == "path" && parameter["name"] == *name {
                        parameter["schema"] = json!({"type": "string", "enum": [value]});
                    }
                }
            }
        }
    }
    document
}

/// schemathesis over every operation of the document: no 5xx, every answer
/// within its documented schema, no crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let Some(binary) = schemathesis_binary() else {
        eprintln!("MARKETBRIDGE_TEST_SCHEMATHESIS is not set: the schemathesis run is skipped");
        return;
    };
    run_on(TestBackend::Sqlite, |database| async move {
        let served = start(&database).await;
        let (installation, token) = install(&served).await;
        let resource_id = provision(&served, &installation, &token).await;
        let document = pinned(
            served.document().await,
            &[
                ("installation_id", &installation.id),
                ("resource_id", &resource_id),
                ("product_slug", "database"),
            ],
        );
        let folder = std::env::temp_dir().join(format!(
            "marketbridge-schemathesis-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&folder).expect("a work folder");
        let schema = folder.join("openapi.json");
        std::fs::write(&schema, document.to_string()).expect("the document written");
        // Pub/Sub's push gets Google's token instead of Vercel's.
        let push_token = served
            .google
            .sim
            .sign_push_claims(&served.google.sim.push_claims());
        let config = folder.join("schemathesis.toml");
        std::fs::write(
            &config,
            format!(
                "[[operations]]\ninclude-operation-id = \"google_push_receive\"\n\
                 headers = {{ Authorization = \"Bearer {push_token}\" }}\n"
            ),
        )
        .expect("the configuration written");
        let output = tokio::process::Command::new(&binary)
            .current_dir(&folder)
            .arg("--config-file")
            .arg(&config)
            .args(["--no-color", "run", schema.to_str().expect("a UTF-8 path")])
            .args(["--url", &served.url("")])
            .args([
                "--checks",
                "not_a_server_error,response_schema_conformance,status_code_conformance,\
                 content_type_conformance",
            ])
            .args(["--max-examples", "12", "--seed", "17", "--workers", "1"])
            .args(["--phases", "examples,coverage,fuzzing"])
            .args(["--request-timeout", "10"])
            .args(["--max-redirects", "0", "--generation-database", "none"])
            .args(["--generation-with-security-parameters", "false"])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(["-H", "X-Vercel-Auth: user"])
            .kill_on_drop(true)
            .output()
            .await
            .expect("schemathesis runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        eprintln!("{stdout}");
        assert!(
            output.status.success(),
            "schemathesis found problems ({}):\n{stdout}\n{stderr}",
            output.status
        );
        let _ = std::fs::remove_dir_all(&folder);
        served.google.stop().await;
    })
    .await;
}
