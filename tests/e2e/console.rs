//! The operator console: the admin RPCs it stands on (outbox listing, retry
//! and discard, the audit log, `WhoAmI`) on both backends, and every page
//! and action in a real headless Chromium.

use crate::vercel_support::{
    CACHE_DELAY_SECONDS, VercelOptions, VercelTest, provision_body, vercel_set,
};
use marketbridge_proto::common::v1 as common;
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_rpc::{ClientCredentials, ServiceClients};
use marketbridge_simulators::common::Fault;
use marketbridge_storage::backend_test;
use marketbridge_storage::testing::TestDatabase;
use serde_json::json;
use std::time::Duration;

/// An operator, a narrower caller, and the entries that let them in.
struct Callers {
    operator: String,
    usage_only: String,
    entries: String,
}

fn callers() -> Callers {
    let (operator_entry, operator) =
        marketbridge_rpc::auth::new_client_entry("ops-alice", "admin").expect("an entry");
    let (usage_entry, usage_only) =
        marketbridge_rpc::auth::new_client_entry("meter", "usage").expect("an entry");
    Callers {
        operator,
        usage_only,
        entries: format!("{operator_entry},{usage_entry}"),
    }
}

fn clients_with(vercel: &VercelTest, token: &str) -> ServiceClients {
    let addresses = &vercel.test.set.addresses;
    ServiceClients::connect(
        &format!("http://{}", addresses.account),
        &format!("http://{}", addresses.provisioning),
        &format!("http://{}", addresses.billing),
        &ClientCredentials {
            token: Some(marketbridge_core::crypto::SecretString::new(token)),
            ..Default::default()
        },
        Duration::from_secs(5),
    )
    .expect("clients")
}

/// A Vercel installation with a delayed resource whose `resource.updated`
/// call Vercel refuses for good: one dead-lettered provisioning job.
struct Scene {
    vercel: VercelTest,
    account_id: String,
    resource_id: String,
    callers: Callers,
}

async fn scene(database: &TestDatabase, manual: bool) -> Scene {
    let callers = callers();
    let options = VercelOptions {
        grpc_clients: Some(callers.entries.clone()),
        ..if manual {
            VercelOptions::manual()
        } else {
            VercelOptions::default()
        }
    };
    let vercel = vercel_set(database, options).await;
    let (installation, admin) = vercel.install().await;
    let resource = vercel
        .provision(
            &installation,
            &admin,
            provision_body("cache", "standard", "cache", json!({})),
        )
        .await;
    let resource_id = resource["id"].as_str().unwrap().to_owned();
    let path = format!(
        "/v1/installations/{}/resources/{resource_id}",
        installation.id
    );
    vercel
        .sim
        .faults()
        .inject(Fault::status(path, 400, 1).method("PATCH"));
    let account_id = vercel.account(&installation).await.id;
    Scene {
        vercel,
        account_id,
        resource_id,
        callers,
    }
}

async fn dead_jobs(clients: &ServiceClients) -> Vec<common::OutboxJob> {
    clients
        .provisioning
        .clone()
        .list_outbox_jobs(common::ListOutboxJobsRequest {
            status: "dead".into(),
            ..Default::default()
        })
        .await
        .expect("the operator lists the outbox")
        .into_inner()
        .jobs
}

backend_test!(
    admin_rpcs_list_retry_discard_and_audit_as_the_operator,
    |database| async move {
        let Scene {
            vercel,
            account_id,
            resource_id,
            callers,
        } = scene(&database, true).await;
        vercel.advance(CACHE_DELAY_SECONDS + 1);
        vercel.drain().await;
        let ops = clients_with(&vercel, &callers.operator);
        let meter = clients_with(&vercel, &callers.usage_only);

        // Who the tokens are.
        let who = ops
            .account
            .clone()
            .who_am_i(common::WhoAmIRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(who.name, "ops-alice");
        assert_eq!(who.scopes, ["admin"]);
        let who = meter
            .account
            .clone()
            .who_am_i(common::WhoAmIRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!((who.name.as_str(), who.scopes.len()), ("meter", 1));
        // Only admins see or touch the outbox.
        let refused = meter
            .provisioning
            .clone()
            .list_outbox_jobs(common::ListOutboxJobsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);

        // The refused call is dead-lettered, and counted.
        let dead = dead_jobs(&ops).await;
        assert_eq!(dead.len(), 1, "{dead:?}");
        let job = &dead[0];
        assert!(job.last_error.contains("400"), "{}", job.last_error);
        let listed = ops
            .provisioning
            .clone()
            .list_outbox_jobs(common::ListOutboxJobsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.counts.unwrap().dead, 1);
        assert!(listed.jobs.iter().any(|j| j.id == job.id));
        let bad = ops
            .provisioning
            .clone()
            .list_outbox_jobs(common::ListOutboxJobsRequest {
                status: "sideways".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);

        // Retry: pending again, then delivered once Vercel accepts it.
        let retried = ops
            .provisioning
            .clone()
            .retry_outbox_job(common::OutboxJobActionRequest {
                job_id: job.id.clone(),
                reason: "Vercel fixed it".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((retried.status.as_str(), retried.attempts), ("pending", 0));
        vercel.drain().await;
        assert!(dead_jobs(&ops).await.is_empty());
        let done = ops
            .provisioning
            .clone()
            .list_outbox_jobs(common::ListOutboxJobsRequest {
                status: "done".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(done.jobs.iter().any(|j| j.id == job.id));
        // A done job can be neither retried nor discarded.
        for discard in [false, true] {
            let request = common::OutboxJobActionRequest {
                job_id: job.id.clone(),
                reason: String::new(),
            };
            let mut client = ops.provisioning.clone();
            let answer = if discard {
                client.discard_outbox_job(request).await
            } else {
                client.retry_outbox_job(request).await
            };
            assert_eq!(answer.unwrap_err().code(), tonic::Code::FailedPrecondition);
        }
        let missing = ops
            .account
            .clone()
            .retry_outbox_job(common::OutboxJobActionRequest {
                job_id: "job_nothing".into(),
                reason: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);

        // Suspending as the operator is audited under the operator's name;
        // the set's own calls are not operator actions.
        let suspended = ops
            .provisioning
            .clone()
            .suspend_resource(provisioning_pb::SuspendResourceRequest {
                context: None,
                resource_id: resource_id.clone(),
                reason: "unpaid".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(suspended.account_id, account_id);
        vercel
            .test
            .set
            .clients
            .provisioning
            .clone()
            .resume_resource(provisioning_pb::ResumeResourceRequest {
                context: None,
                resource_id: resource_id.clone(),
            })
            .await
            .unwrap();
        // A discard of a waiting job (the resume's notification), audited.
        let waiting = ops
            .provisioning
            .clone()
            .list_outbox_jobs(common::ListOutboxJobsRequest {
                status: "pending".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .jobs;
        let waiting = waiting.first().expect("the resume waits to tell Vercel");
        let discarded = ops
            .provisioning
            .clone()
            .discard_outbox_job(common::OutboxJobActionRequest {
                job_id: waiting.id.clone(),
                reason: "told Vercel by hand".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(discarded.status, "discarded");
        let again = ops
            .provisioning
            .clone()
            .discard_outbox_job(common::OutboxJobActionRequest {
                job_id: waiting.id.clone(),
                reason: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            again.status, "discarded",
            "discarding twice changes nothing"
        );

        let audit = ops
            .provisioning
            .clone()
            .list_audit_entries(common::ListAuditEntriesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .entries;
        let summary: Vec<(String, String, String)> = audit
            .iter()
            .map(|e| (e.actor.clone(), e.action.clone(), e.outcome.clone()))
            .collect();
        let ok = |action: &str| ("ops-alice".to_owned(), action.to_owned(), "ok".to_owned());
        assert!(summary.contains(&ok("outbox.retry")), "{summary:?}");
        assert!(summary.contains(&ok("resource.suspend")), "{summary:?}");
        assert!(summary.contains(&ok("outbox.discard")), "{summary:?}");
        assert!(
            summary
                .iter()
                .all(|(actor, action, _)| actor == "ops-alice" && action != "resource.resume"),
            "only the operator's actions: {summary:?}"
        );
        assert!(
            summary
                .iter()
                .any(|(_, action, outcome)| action == "outbox.retry" && outcome != "ok"),
            "a refused retry is recorded too: {summary:?}"
        );
        let of_account = ops
            .provisioning
            .clone()
            .list_audit_entries(common::ListAuditEntriesRequest {
                account_id: account_id.clone(),
                page: None,
            })
            .await
            .unwrap()
            .into_inner()
            .entries;
        assert!(
            of_account
                .iter()
                .any(|e| e.action == "resource.suspend" && e.target == resource_id)
        );
        vercel.stop().await;
    }
);

/// A W3C WebDriver session on a headless Chromium, spoken over plain HTTP
/// (the protocol is JSON; no client crate needed).
struct Browser {
    http: reqwest::Client,
    session: String,
    driver_url: String,
    driver: std::process::Child,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The path of `name` on `PATH`.
fn on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

impl Browser {
    /// Chromium and chromedriver, or `None` when they are not installed and
    /// this is not CI (under CI their absence fails the test).
    async fn start() -> Option<Browser> {
        marketbridge_rpc::tls::install_crypto_provider();
        let chromium = on_path("chromium").or_else(|| on_path("chromium-browser"));
        let driver = on_path("chromedriver");
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            let ci = std::env::var("CI")
                .map(|v| !v.is_empty() && v != "false" && v != "0")
                .unwrap_or(false);
            assert!(
                !ci,
                "the console's browser test needs Chromium and its WebDriver: \
                 install the Debian packages `chromium` and `chromium-driver` (.ci/run does)"
            );
            eprintln!("SKIPPED: chromium or chromedriver is not installed (CI is unset)");
            return None;
        };
        let port = crate::support::unused_port();
        let child = std::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::new();
        let driver_url = format!("http://127.0.0.1:{port}");
        let mut ready = false;
        for _ in 0..200 {
            if let Ok(answer) = http.get(format!("{driver_url}/status")).send().await
                && answer.status().is_success()
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ready, "chromedriver answers");
        let created: serde_json::Value = http
            .post(format!("{driver_url}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium.display().to_string(),
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1400,1100"]
                }
            }}}))
            .send()
            .await
            .expect("a session")
            .json()
            .await
            .expect("a JSON answer");
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver made no session: {created}"))
            .to_owned();
        Some(Browser {
            http,
            session,
            driver_url,
            driver: child,
        })
    }

    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let url = format!("{}/session/{}{path}", self.driver_url, self.session);
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: serde_json::Value = request
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("JSON");
        assert!(
            answer["value"].get("error").is_none(),
            "WebDriver {path}: {answer}"
        );
        answer["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn url(&self) -> String {
        self.command(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn source(&self) -> String {
        self.command(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn find(&self, css: &str) -> String {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_owned()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn script(&self, script: &str) -> serde_json::Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Clicks `css` and waits until the page it leads to has loaded (the old
    /// page is marked first, so a click that navigates is told apart from
    /// one that has not yet).
    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.script("document.documentElement.setAttribute('data-old', '1')")
            .await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
        for _ in 0..400 {
            let loaded = self
                .script(
                    "return document.readyState === 'complete' && \
                     !document.documentElement.hasAttribute('data-old')",
                )
                .await;
            if loaded == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("clicking {css} led to no new page");
    }

    /// Clicks an action button (the form posts and the browser follows the
    /// redirect back) and returns the page it lands on.
    async fn act(&self, action: &str, target: &str, reason: Option<&str>) -> String {
        let button = format!(r#"button[data-action="{action}"][data-target="{target}"]"#);
        if let Some(reason) = reason {
            self.type_into(&format!("form:has({button}) input[name=reason]"), reason)
                .await;
        }
        self.click(&button).await;
        self.source().await
    }

    async fn cookie(&self, name: &str) -> String {
        self.command(reqwest::Method::GET, &format!("/cookie/{name}"), None)
            .await["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Saves a PNG of the page as `name` and prints where.
    async fn screenshot(&self, name: &str) {
        use base64::Engine;
        let png = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64"))
            .expect("a PNG");
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).expect("the screenshot folder");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, bytes).expect("the screenshot");
        println!("screenshot: {}", path.display());
    }

    async fn quit(mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.driver_url, self.session))
            .send()
            .await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Every page and action of the console, signed in as an operator in a real
/// Chromium, over a set holding a Vercel installation with a resource and two
/// Google accounts whose signups wait, with the simulators playing both
/// marketplaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_walks_every_page_and_action() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    marketbridge_storage::testing::run_on(
        marketbridge_storage::testing::TestBackend::Sqlite,
        |database| async move {
            walk(&browser, &database).await;
            browser.quit().await;
        },
    )
    .await;
}

fn contains(page: &str, needle: &str) {
    assert!(page.contains(needle), "the page shows {needle:?}:\n{page}");
}

async fn walk(browser: &Browser, database: &TestDatabase) {
    use crate::google_support::{Delivery, start_with};
    use marketbridge_simulators::google::PRODUCT;
    let callers = callers();
    let vercel_sim = marketbridge_simulators::vercel::VercelSimulator::start_default()
        .await
        .expect("the Vercel simulator starts");
    let vercel = (
        vercel_sim.issuer(),
        vercel_sim.jwks_url(),
        vercel_sim.url().to_owned(),
        vercel_sim.client_id().to_owned(),
        vercel_sim.client_secret().to_owned(),
    );
    let entries = callers.entries.clone();
    let google = start_with(database, Delivery::Push, move |config| {
        config.security.grpc_clients = entries;
        config.vercel.oidc_issuer = vercel.0;
        config.vercel.jwks_url = vercel.1;
        config.vercel.api_base_url = vercel.2;
        config.vercel.client_id = vercel.3;
        config.vercel.client_secret = vercel.4;
    })
    .await;
    let gateway = google.test.set.gateway_url();
    let at = |path: &str| format!("{gateway}{path}");

    // A Vercel installation with a resource.
    let partner = vercel_sim.partner(&format!("{gateway}/vercel"));
    let installation = vercel_sim.new_installation();
    let admin = vercel_sim.admin_token(&installation);
    let installed = partner
        .put(&crate::vercel_support::installation_path(&installation))
        .user(&admin)
        .idempotency_key(&format!("install-{}", installation.id))
        .json(&installation.upsert_body())
        .send()
        .await;
    assert_eq!(installed.status, 204, "{}", installed.text);
    let provisioned = partner
        .post(&format!(
            "{}/resources",
            crate::vercel_support::installation_path(&installation)
        ))
        .user(&admin)
        .json(&provision_body("database", "free", "hobby", json!({})))
        .send()
        .await;
    assert_eq!(provisioned.status, 200, "{}", provisioned.text);
    let resource_id = provisioned.body["id"].as_str().unwrap().to_owned();
    // Two Google purchases whose signups wait.
    let approved = google.sim.purchase(PRODUCT, "pro-plan");
    let rejected = google.sim.purchase(PRODUCT, "pro-plan");
    google.settle().await;
    let approved_account = google.account(&approved.account_id).await.id;
    let rejected_account = google.account(&rejected.account_id).await.id;
    let vercel_account = google
        .test
        .set
        .clients
        .account
        .clone()
        .get_account(marketbridge_proto::account::v1::GetAccountRequest {
            account: Some(common::AccountSelector::by_ref(
                common::Marketplace::Vercel,
                &installation.id,
            )),
        })
        .await
        .unwrap()
        .into_inner()
        .id;

    // Signing in: the page, a caller without admin, then the operator.
    browser.goto(&at("/console")).await;
    assert!(browser.url().await.ends_with("/console/sign-in"));
    browser.screenshot("01-sign-in").await;
    browser.type_into("#token", &callers.usage_only).await;
    browser.click("#sign-in").await;
    contains(&browser.source().await, "does not hold the admin scope");
    browser.type_into("#token", "not-a-token").await;
    browser.click("#sign-in").await;
    contains(&browser.source().await, "not a caller the services know");
    browser.type_into("#token", &callers.operator).await;
    browser.click("#sign-in").await;
    assert!(browser.url().await.ends_with("/console"));
    let overview = browser.source().await;
    contains(&overview, "ops-alice");
    contains(&overview, "<svg");
    contains(&overview, "google");
    contains(&overview, "vercel");
    browser.screenshot("02-overview").await;
    let cookie = browser.cookie("mb_console").await;
    assert!(!cookie.is_empty() && !cookie.contains(&callers.operator));

    // Accounts: search by marketplace ids and by ours.
    browser.goto(&at("/console/accounts")).await;
    browser.type_into("#q", &approved.account_id).await;
    browser.click("#search").await;
    let found = browser.source().await;
    contains(&found, &approved_account);
    assert!(!found.contains(&rejected_account));
    browser.screenshot("03-accounts").await;
    browser
        .goto(&at(&format!(
            "/console/accounts?q={}",
            approved.entitlement_id
        )))
        .await;
    contains(&browser.source().await, &approved_account);
    browser
        .goto(&at(&format!("/console/accounts?q={}", installation.id)))
        .await;
    contains(&browser.source().await, &vercel_account);

    // Approving a signup by hand; Google refuses the approval for good.
    google
        .sim
        .api()
        .faults
        .inject(Fault::status(":approve", 400, 1));
    browser
        .goto(&at(&format!("/console/accounts/{approved_account}")))
        .await;
    contains(
        &browser.source().await,
        r#"<span class="badge pending">pending</span>"#,
    );
    let page = browser.act("signup.approve", &approved_account, None).await;
    contains(&page, "Done: <code>signup.approve</code>");
    contains(&page, "approving");
    google.settle().await;

    // The outbox shows the dead-lettered approval; retrying delivers it.
    browser.goto(&at("/console/outbox")).await;
    let outbox = browser.source().await;
    contains(&outbox, r#"<span class="badge dead">dead</span>"#);
    browser.screenshot("04-outbox-dead").await;
    let dead = clients_with_url(&google.test.set, &callers.operator)
        .account
        .clone()
        .list_outbox_jobs(common::ListOutboxJobsRequest {
            status: "dead".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let page = browser.act("outbox.retry", &dead[0].id, None).await;
    contains(&page, "Done: <code>outbox.retry</code>");
    google.settle().await;
    browser.goto(&at("/console/outbox?status=done")).await;
    contains(&browser.source().await, &dead[0].id);
    browser
        .goto(&at(&format!("/console/accounts/{approved_account}")))
        .await;
    let page = browser.source().await;
    contains(&page, r#"<span class="badge approved">approved</span>"#);
    contains(&page, "signup.approve by <strong>ops-alice</strong>");

    // Rejecting the other signup, with a reason.
    browser
        .goto(&at(&format!("/console/accounts/{rejected_account}")))
        .await;
    let page = browser
        .act(
            "signup.reject",
            &rejected_account,
            Some("not a customer of ours"),
        )
        .await;
    contains(&page, r#"<span class="badge rejected">rejected</span>"#);
    contains(&page, "not a customer of ours");
    google.settle().await;
    assert_eq!(
        google.sim.account(&rejected.account_id).unwrap().signup,
        "REJECTED"
    );

    // Re-reading an entitlement and an account from their marketplace.
    browser.goto(&at("/console/subscriptions")).await;
    browser.screenshot("05-subscriptions").await;
    let subscription = google
        .subscription(&approved.entitlement_id)
        .await
        .expect("the entitlement is recorded");
    let page = browser
        .act("subscription.sync", &subscription.id, None)
        .await;
    contains(&page, "Done: <code>subscription.sync</code>");
    browser
        .goto(&at(&format!("/console/accounts/{vercel_account}")))
        .await;
    let page = browser.act("account.refresh", &vercel_account, None).await;
    contains(&page, "Done: <code>account.refresh</code>");

    // Suspending and resuming a resource; discarding the waiting call.
    browser.goto(&at("/console/resources")).await;
    browser.screenshot("06-resources").await;
    let page = browser
        .act("resource.suspend", &resource_id, Some("unpaid invoice"))
        .await;
    contains(&page, r#"<span class="badge suspended">suspended</span>"#);
    browser
        .goto(&at("/console/outbox?service=provisioning&status=pending"))
        .await;
    let pending = clients_with_url(&google.test.set, &callers.operator)
        .provisioning
        .clone()
        .list_outbox_jobs(common::ListOutboxJobsRequest {
            status: "pending".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    let waiting = pending
        .first()
        .expect("the suspension waits to tell Vercel");
    let page = browser
        .act("outbox.discard", &waiting.id, Some("told Vercel by hand"))
        .await;
    contains(&page, "Done: <code>outbox.discard</code>");
    browser.goto(&at("/console/outbox?status=discarded")).await;
    contains(&browser.source().await, &waiting.id);
    browser.goto(&at("/console/resources")).await;
    let page = browser.act("resource.resume", &resource_id, None).await;
    contains(&page, r#"<span class="badge ready">ready</span>"#);
    google.settle().await;

    // The account's timeline shows who did what.
    browser
        .goto(&at(&format!("/console/accounts/{vercel_account}")))
        .await;
    let page = browser.source().await;
    for action in ["resource.suspend", "resource.resume", "account.refresh"] {
        contains(&page, &format!("{action} by <strong>ops-alice</strong>"));
    }
    contains(&page, "hobby");
    browser.screenshot("07-account").await;
    browser
        .goto(&at(&format!("/console/accounts/{approved_account}")))
        .await;
    let page = browser.source().await;
    contains(&page, "outbox.retry by <strong>ops-alice</strong>");
    contains(&page, "ACCOUNT_ACTIVE");
    browser.screenshot("08-account-google").await;

    // Usage and the event inbox.
    browser.goto(&at("/console/usage")).await;
    contains(&browser.source().await, "Reports sent to the marketplaces");
    browser.screenshot("09-usage").await;
    browser
        .goto(&at(&format!(
            "/console/usage?subscription_id={}",
            subscription.id
        )))
        .await;
    contains(&browser.source().await, "Usage windows of");
    browser.screenshot("10-usage-windows").await;
    // Vercel delivers one webhook three times: stored once, marked duplicate.
    let webhooks = vercel_sim.webhooks(&format!("{gateway}/vercel/webhook"));
    let connected = marketbridge_simulators::vercel::webhooks::envelope(
        "integration-resource.project-connected",
        marketbridge_simulators::vercel::webhooks::project_connection_payload(
            &installation.id,
            &installation.team_id,
            &resource_id,
            "prj_console",
        ),
    );
    for delivery in 0..3 {
        let answer = webhooks.send(&connected).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(answer.body["duplicate"], delivery > 0, "{}", answer.text);
    }
    browser.goto(&at("/console/events")).await;
    let events = browser.source().await;
    contains(&events, "ENTITLEMENT_CREATION_REQUESTED");
    contains(&events, "pubsub_push");
    contains(&events, "integration-resource.project-connected");
    contains(&events, "delivered 3×");
    browser.screenshot("11-events").await;

    // Forged posts are refused: no CSRF token, a foreign origin.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let session = format!("mb_console={cookie}");
    let forged = http
        .post(at("/console/actions"))
        .header("cookie", &session)
        .form(&[
            ("action", "resource.suspend"),
            ("target", resource_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    browser.goto(&at("/console")).await;
    let csrf = crate::google_support::hidden_value(&browser.source().await, "csrf")
        .expect("the sign-out form carries the token");
    let foreign = http
        .post(at("/console/actions"))
        .header("cookie", &session)
        .header("origin", "https://evil.example")
        .form(&[
            ("csrf", csrf.as_str()),
            ("action", "resource.suspend"),
            ("target", resource_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    let resource = google.resources(&vercel_account).await;
    assert!(
        resource
            .iter()
            .all(|r| r.status != provisioning_pb::ResourceStatus::Suspended as i32),
        "nothing forged was done"
    );

    // Signing out ends the session.
    browser.click("#sign-out").await;
    assert!(browser.url().await.ends_with("/console/sign-in"));
    browser.goto(&at("/console/outbox")).await;
    assert!(browser.url().await.ends_with("/console/sign-in"));
    google.stop().await;
}

fn clients_with_url(set: &marketbridge::set::RunningSet, token: &str) -> ServiceClients {
    let addresses = &set.addresses;
    ServiceClients::connect(
        &format!("http://{}", addresses.account),
        &format!("http://{}", addresses.provisioning),
        &format!("http://{}", addresses.billing),
        &ClientCredentials {
            token: Some(marketbridge_core::crypto::SecretString::new(token)),
            ..Default::default()
        },
        Duration::from_secs(5),
    )
    .expect("clients")
}
