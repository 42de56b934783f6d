//! A set wired to the Vercel simulator: the gateway trusts the simulator's
//! keys and calls its API; tests drive the partner API through the
//! simulator's client, as Vercel would.

#![allow(dead_code)]

use crate::support::{TestSet, set_on};
use marketbridge_catalog::BUILTIN_CATALOG;
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::common::v1::{AccountSelector, Marketplace};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_simulators::vercel::{
    InstallationHandle, PartnerAnswer, PartnerClient, VercelSimulator,
};
use marketbridge_storage::testing::TestDatabase;
use serde_json::{Value, json};

/// Products the Vercel tests add to the built-in catalog: `cache` takes 30
/// seconds to provision (resources start pending, rotations answer later),
/// and offers installation-level plans.
pub const EXTRA_CATALOG: &str = r#"
[[products]]
id = "cache"
name = "Cache"
description = "A cache that takes a while to set up."
driver = "template"

  [products.template]
  provisioning_delay_seconds = 30
  [products.template.secrets]
  REDIS_URL = "redis://{username}:{password}@cache.example.com/{resource_id}"
  [products.template.environment_overrides.REDIS_URL]
  development = "redis://localhost:6379/{resource_id}"

  [[products.plans]]
  id = "standard"
  name = "Standard"
  description = "One cache."
  type = "subscription"
  price = "10.00"
  cost = "$10.00/month"
  details = [{ label = "Memory", value = "1 GB" }]

  [[products.plans]]
  id = "team-free"
  name = "Team (free)"
  description = "Every cache of the team, free tier."
  type = "subscription"
  scope = "installation"
  price = "0.00"
  payment_method_required = false

  [[products.plans]]
  id = "team"
  name = "Team"
  description = "Every cache of the team."
  type = "subscription"
  scope = "installation"
  price = "50.00"
  cost = "$50.00/month"
"#;

/// Seconds after which a `cache` resource is provisioned.
pub const CACHE_DELAY_SECONDS: i64 = 30;

/// A set and the simulator playing Vercel for it.
pub struct VercelTest {
    /// The set.
    pub test: TestSet,
    /// Vercel.
    pub sim: VercelSimulator,
    /// Vercel's client of the partner API.
    pub partner: PartnerClient,
    catalog_dir: std::path::PathBuf,
}

/// How a test wants its set.
#[derive(Default)]
pub struct VercelOptions {
    /// Drive time and outboxes by hand.
    pub manual: bool,
    /// The installation plan new installations get.
    pub default_installation_plan: Option<String>,
    /// The integration's URL slug (provider-initiated SSO through the
    /// simulator's dashboard).
    pub integration_slug: Option<String>,
    /// How long the gateway trusts fetched signing keys
    /// (`gateway.jwks_cache_seconds`), when not the default.
    pub jwks_cache_seconds: Option<u64>,
    /// Any other change to the configuration.
    pub tweak: Option<fn(&mut marketbridge_config::Config)>,
    /// Extra gRPC callers (`security.grpc_clients`), such as an operator.
    pub grpc_clients: Option<String>,
}

impl VercelOptions {
    /// Manual clock, no background workers.
    pub fn manual() -> Self {
        Self {
            manual: true,
            ..Default::default()
        }
    }
}

/// Starts a simulator and a set configured for it on `database`'s backend.
pub async fn vercel_set(database: &TestDatabase, options: VercelOptions) -> VercelTest {
    let sim = VercelSimulator::start_default()
        .await
        .expect("the simulator starts");
    let catalog_dir = std::env::temp_dir().join(format!(
        "marketbridge-vercel-catalog-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&catalog_dir).expect("catalog folder");
    let catalog_path = catalog_dir.join("catalog.toml");
    std::fs::write(&catalog_path, format!("{BUILTIN_CATALOG}\n{EXTRA_CATALOG}"))
        .expect("catalog file");
    let vercel = (
        sim.issuer(),
        sim.jwks_url(),
        sim.url().to_owned(),
        sim.client_id().to_owned(),
        sim.client_secret().to_owned(),
    );
    let default_plan = options.default_installation_plan.clone();
    let slug = options.integration_slug.clone();
    let jwks_cache_seconds = options.jwks_cache_seconds;
    let tweak = options.tweak;
    let grpc_clients = options.grpc_clients.clone();
    let dashboard = sim.url().to_owned();
    // Imports return to the simulator's completion page.
    let import_origins = format!("https://vercel.com,{}", sim.url());
    let catalog = catalog_path.display().to_string();
    let mut builder = set_on(database).configure(move |config| {
        config.vercel.oidc_issuer = vercel.0;
        config.vercel.jwks_url = vercel.1;
        config.vercel.api_base_url = vercel.2;
        config.vercel.client_id = vercel.3;
        config.vercel.client_secret = vercel.4;
        config.vercel.default_installation_plan = default_plan.unwrap_or_default();
        config.vercel.import_return_origins = import_origins;
        if let Some(slug) = slug {
            config.vercel.integration_slug = slug;
            config.vercel.dashboard_url = dashboard;
        }
        config.catalog.path = catalog;
        if let Some(seconds) = jwks_cache_seconds {
            config.gateway.jwks_cache_seconds = seconds;
        }
        if let Some(tweak) = tweak {
            tweak(config);
        }
        if let Some(callers) = grpc_clients {
            config.security.grpc_clients = callers;
        }
    });
    if options.manual {
        builder = builder.manual_clock().without_workers();
    }
    let test = builder.start().await;
    let partner = sim.partner(&format!("{}/vercel", test.set.gateway_url()));
    sim.set_redirect_login_url(&format!("{}/vercel/sso", test.set.gateway_url()));
    VercelTest {
        test,
        sim,
        partner,
        catalog_dir,
    }
}

/// The partner API path of an installation.
pub fn installation_path(installation: &InstallationHandle) -> String {
    format!("/v1/installations/{}", installation.id)
}

/// The partner API path of a resource.
pub fn resource_path(installation: &InstallationHandle, resource_id: &str) -> String {
    format!(
        "/v1/installations/{}/resources/{resource_id}",
        installation.id
    )
}

/// A provisioning body.
pub fn provision_body(product: &str, plan: &str, name: &str, metadata: Value) -> Value {
    json!({"productId": product, "name": name, "metadata": metadata, "billingPlanId": plan})
}

/// Asserts `answer` is a partner API error with `status` and `code`.
pub fn assert_error(answer: &PartnerAnswer, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.text);
    assert_eq!(answer.body["error"]["code"], code, "{}", answer.text);
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        answer.text
    );
}

/// The keys of `error.fields` of an answer.
pub fn field_keys(answer: &PartnerAnswer) -> Vec<String> {
    answer.body["error"]["fields"]
        .as_array()
        .map(|fields| {
            fields
                .iter()
                .filter_map(|f| f["key"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl VercelTest {
    /// The gateway URL of `path` below the Vercel base path.
    pub fn url(&self, path: &str) -> String {
        self.test.url(&format!("/vercel{path}"))
    }

    /// Installs a new installation through the partner API; returns it with
    /// an admin token.
    pub async fn install(&self) -> (InstallationHandle, String) {
        let installation = self.sim.new_installation();
        let token = self.sim.admin_token(&installation);
        let answer = self
            .partner
            .put(&installation_path(&installation))
            .user(&token)
            .idempotency_key(&format!("install-{}", installation.id))
            .json(&installation.upsert_body())
            .send()
            .await;
        assert_eq!(answer.status, 204, "{}", answer.text);
        (installation, token)
    }

    /// Provisions a resource; panics unless it succeeds.
    pub async fn provision(
        &self,
        installation: &InstallationHandle,
        token: &str,
        body: Value,
    ) -> Value {
        let answer = self
            .partner
            .post(&format!("{}/resources", installation_path(installation)))
            .user(token)
            .json(&body)
            .send()
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        answer.body
    }

    /// The account of an installation.
    pub async fn account(&self, installation: &InstallationHandle) -> account_pb::Account {
        let mut accounts = self.test.set.clients.account.clone();
        accounts
            .get_account(account_pb::GetAccountRequest {
                account: Some(AccountSelector::by_ref(
                    Marketplace::Vercel,
                    &installation.id,
                )),
            })
            .await
            .expect("the account exists")
            .into_inner()
    }

    /// A resource as provisioning stores it.
    pub async fn stored_resource(&self, resource_id: &str) -> provisioning_pb::Resource {
        let mut provisioning = self.test.set.clients.provisioning.clone();
        provisioning
            .get_resource(provisioning_pb::GetResourceRequest {
                resource_id: resource_id.to_owned(),
                account_id: String::new(),
            })
            .await
            .expect("the resource exists")
            .into_inner()
    }

    /// Every resource of an account, deleted ones too.
    pub async fn stored_resources(&self, account_id: &str) -> Vec<provisioning_pb::Resource> {
        let mut provisioning = self.test.set.clients.provisioning.clone();
        provisioning
            .list_resources(provisioning_pb::ListResourcesRequest {
                account_id: account_id.to_owned(),
                include_deleted: true,
                ..Default::default()
            })
            .await
            .expect("resources list")
            .into_inner()
            .resources
    }

    /// Moves the manual clock forward.
    pub fn advance(&self, seconds: i64) {
        self.test
            .clock
            .as_ref()
            .expect("a manual clock")
            .advance(chrono::Duration::seconds(seconds));
    }

    /// Runs every outbox until nothing is due.
    pub async fn drain(&self) -> usize {
        self.test.drain().await
    }

    /// Stops the set and the simulator.
    pub async fn stop(self) {
        self.sim.stop();
        let VercelTest {
            test, catalog_dir, ..
        } = self;
        test.stop().await;
        let _ = std::fs::remove_dir_all(catalog_dir);
    }
}

/// The nonce of the "Confirm sign-in" form in `page`.
pub fn confirmation_nonce(page: &str) -> String {
    page.split("name=\"nonce\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the confirmation form carries a nonce")
        .to_owned()
}

/// Follows a Redirect Login URL as a person would: opens it and, when the
/// gateway asks to confirm the sign-in, confirms it in the same browser.
/// The answer that opens the session (or the refusal).
pub async fn sign_in(browser: &reqwest::Client, url: &str) -> reqwest::Response {
    let answer = browser.get(url).send().await.unwrap();
    if answer.status() != 200 {
        return answer;
    }
    let pending = answer
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("mb_vercel_sso_pending="))
        .map(|v| v.split(';').next().unwrap().to_owned())
        .expect("a pending sign-in cookie");
    assert!(
        answer
            .headers()
            .get_all("set-cookie")
            .iter()
            .all(|v| !v.to_str().unwrap().starts_with("mb_vercel_session=")),
        "no session before the person confirms"
    );
    let page = answer.text().await.unwrap();
    let nonce = confirmation_nonce(&page);
    let action = page
        .split("action=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the form posts somewhere")
        .to_owned();
    let origin = url::Url::parse(url).unwrap();
    browser
        .post(origin.join(&action).unwrap())
        .header("cookie", pending)
        .form(&[("nonce", nonce.as_str())])
        .send()
        .await
        .unwrap()
}
