//! The read path's hops: under `marketbridge up` the gateway and the services
//! call each other in process; separate processes call over gRPC. Both
//! wirings must give the same answers, the in-process calls must still be
//! traced gateway → service, and the gateway's cache of installations'
//! accounts must never serve a change it made itself stale.

use crate::support::init_telemetry;
use crate::vercel_support::{EXTRA_CATALOG, provision_body};
use chrono::TimeZone;
use marketbridge::set::{RunningSet, SetOptions, Wiring};
use marketbridge_catalog::BUILTIN_CATALOG;
use marketbridge_config::Config;
use marketbridge_core::crypto::Cipher;
use marketbridge_core::time::ManualClock;
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::common::v1::AccountSelector;
use marketbridge_simulators::vercel::{
    InstallationHandle, PartnerAnswer, PartnerClient, VercelSimulator,
};
use marketbridge_storage::backend_test;
use marketbridge_storage::testing::TestDatabase;
use serde_json::{Value, json};
use std::sync::Arc;

/// A set on its own databases, wired as asked, trusting `sim`.
struct Wired {
    set: RunningSet,
    partner: PartnerClient,
    clock: ManualClock,
    _databases: Vec<TestDatabase>,
    folder: std::path::PathBuf,
}

impl Wired {
    async fn start(database: &TestDatabase, sim: &VercelSimulator, wiring: Wiring) -> Self {
        init_telemetry();
        marketbridge_rpc::tls::install_crypto_provider();
        let databases = vec![
            database.sibling().await,
            database.sibling().await,
            database.sibling().await,
        ];
        let folder = std::env::temp_dir().join(format!(
            "marketbridge-perf-hops-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&folder).expect("data folder");
        let catalog = folder.join("catalog.toml");
        std::fs::write(&catalog, format!("{BUILTIN_CATALOG}\n{EXTRA_CATALOG}")).expect("catalog");
        let mut config = Config::default();
        config.data.dir = folder.display().to_string();
        config.account.listen = "127.0.0.1:0".into();
        config.provisioning.listen = "127.0.0.1:0".into();
        config.billing.listen = "127.0.0.1:0".into();
        config.gateway.listen = "127.0.0.1:0".into();
        config.gateway.metrics_listen = "127.0.0.1:0".into();
        config.gateway.public_url = String::new();
        config.account.database_url = databases[0].url().to_owned();
        config.provisioning.database_url = databases[1].url().to_owned();
        config.billing.database_url = databases[2].url().to_owned();
        config.security.encryption_key = Cipher::generate_base64_key();
        config.catalog.path = catalog.display().to_string();
        config.vercel.oidc_issuer = sim.issuer();
        config.vercel.jwks_url = sim.jwks_url();
        config.vercel.api_base_url = sim.url().to_owned();
        config.vercel.client_id = sim.client_id().to_owned();
        config.vercel.client_secret = sim.client_secret().to_owned();
        let cipher = Cipher::from_base64_key(&config.security.encryption_key).expect("key");
        let clock = ManualClock::new(
            chrono::Utc
                .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
                .unwrap(),
        );
        let set = RunningSet::start_wired(
            SetOptions {
                config,
                clock: Arc::new(clock.clone()),
                cipher,
                run_workers: false,
            },
            wiring,
        )
        .await
        .expect("the set starts");
        let partner = sim.partner(&format!("{}/vercel", set.gateway_url()));
        Self {
            set,
            partner,
            clock,
            _databases: databases,
            folder,
        }
    }

    async fn install(&self, sim: &VercelSimulator) -> (InstallationHandle, String) {
        let installation = sim.new_installation();
        let token = sim.admin_token(&installation);
        let answer = self
            .partner
            .put(&format!("/v1/installations/{}", installation.id))
            .user(&token)
            .idempotency_key(&format!("install-{}", installation.id))
            .json(&installation.upsert_body())
            .send()
            .await;
        assert_eq!(answer.status, 204, "{}", answer.text);
        (installation, token)
    }

    async fn stop(self) {
        self.set.stop().await.expect("the set stops");
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

/// One answer of the script, with what differs between two runs by nature
/// (ids, generated secrets) replaced by names.
#[derive(Debug, PartialEq)]
struct Step {
    call: &'static str,
    status: u16,
    body: Value,
}

fn normalized(answer: &PartnerAnswer, names: &[(&str, &str)]) -> Value {
    let mut text = answer.text.clone();
    for (value, name) in names {
        if !value.is_empty() {
            text = text.replace(value, name);
        }
    }
    let mut body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    scrub_secrets(&mut body);
    body
}

/// Generated secret values differ on every provision.
fn scrub_secrets(body: &mut Value) {
    match body {
        Value::Object(fields) => {
            if let Some(Value::Array(secrets)) = fields.get_mut("secrets") {
                for secret in secrets {
                    if let Some(value) = secret.get_mut("value") {
                        *value = json!("<secret>");
                    }
                }
            }
            for value in fields.values_mut() {
                scrub_secrets(value);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(scrub_secrets),
        _ => {}
    }
}

/// The same sequence of partner calls, reads and changes, successes and
/// refusals.
async fn script(wired: &Wired, sim: &VercelSimulator) -> Vec<Step> {
    let (installation, admin) = wired.install(sim).await;
    let (other, _) = wired.install(sim).await;
    let system = sim.system_token(Some(&installation));
    let partner = &wired.partner;
    let base = format!("/v1/installations/{}", installation.id);
    let mut steps = Vec::new();
    let mut names = vec![
        (installation.id.clone(), "{installation}".to_owned()),
        (other.id.clone(), "{other}".to_owned()),
    ];
    macro_rules! step {
        ($call:literal, $request:expr) => {{
            let answer = $request.send().await;
            let pairs: Vec<(&str, &str)> = names
                .iter()
                .map(|(v, n)| (v.as_str(), n.as_str()))
                .collect();
            steps.push(Step {
                call: $call,
                status: answer.status,
                body: normalized(&answer, &pairs),
            });
            answer
        }};
    }
    step!(
        "product plans, no installation",
        partner
            .get("/v1/products/database/plans")
            .system(&sim.system_token(None))
    );
    step!(
        "product plans, installed user",
        partner.get("/v1/products/database/plans").user(&admin)
    );
    step!(
        "product plans with metadata",
        partner
            .get("/v1/products/database/plans?metadata=%7B%22region%22%3A%22fra1%22%7D")
            .user(&admin)
    );
    step!(
        "unknown product",
        partner.get("/v1/products/nope/plans").user(&admin)
    );
    step!(
        "installation plans",
        partner.get(&format!("{base}/plans")).user(&admin)
    );
    step!("installation", partner.get(&base).system(&system));
    let provisioned = step!(
        "provision",
        partner
            .post(&format!("{base}/resources"))
            .user(&admin)
            .idempotency_key("provision-1")
            .json(&provision_body(
                "database",
                "pro",
                "main-db",
                json!({"region": "fra1"})
            ))
    );
    let resource_id = provisioned.body["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    names.insert(0, (resource_id.clone(), "{resource}".to_owned()));
    steps.last_mut().expect("a step").body = normalized(
        &provisioned,
        &names
            .iter()
            .map(|(v, n)| (v.as_str(), n.as_str()))
            .collect::<Vec<_>>(),
    );
    step!(
        "provision replayed",
        partner
            .post(&format!("{base}/resources"))
            .user(&admin)
            .idempotency_key("provision-1")
            .json(&provision_body(
                "database",
                "pro",
                "main-db",
                json!({"region": "fra1"})
            ))
    );
    step!(
        "provision of an unknown plan",
        partner
            .post(&format!("{base}/resources"))
            .user(&admin)
            .json(&provision_body("database", "gold", "x", json!({})))
    );
    wired.set.drain().await.expect("outboxes drain");
    let resource = format!("{base}/resources/{resource_id}");
    step!("resource", partner.get(&resource).system(&system));
    step!("resource, user", partner.get(&resource).user(&admin));
    step!(
        "resources",
        partner.get(&format!("{base}/resources")).system(&system)
    );
    step!(
        "resource plans",
        partner.get(&format!("{resource}/plans")).user(&admin)
    );
    step!(
        "rename",
        partner
            .patch(&resource)
            .user(&admin)
            .json(&json!({"name": "renamed"}))
    );
    step!("renamed resource", partner.get(&resource).system(&system));
    step!(
        "unknown resource",
        partner
            .get(&format!("{base}/resources/res_01jd6v3y0000000000000000"))
            .system(&system)
    );
    step!(
        "another installation's token",
        partner
            .get(&resource)
            .system(&sim.system_token(Some(&other)))
    );
    step!("no token", partner.get(&resource));
    step!(
        "installation plan change",
        partner
            .patch(&base)
            .user(&admin)
            .json(&json!({"billingPlanId": "cache/team"}))
    );
    step!(
        "installation after the change",
        partner.get(&base).system(&system)
    );
    step!("delete resource", partner.delete(&resource).user(&admin));
    wired.set.drain().await.expect("outboxes drain");
    step!("deleted resource", partner.get(&resource).system(&system));
    step!(
        "uninstall",
        partner
            .delete(&base)
            .system(&system)
            .json(&json!({"cascadeResourceDeletion": true, "reason": "user_request"}))
    );
    step!(
        "plans after uninstall",
        partner.get(&format!("{base}/plans")).user(&admin)
    );
    step!(
        "resources after uninstall",
        partner.get(&format!("{base}/resources")).system(&system)
    );
    steps
}

backend_test!(
    in_process_and_grpc_wiring_answer_the_same,
    |database| async move {
        let sim = VercelSimulator::start_default().await.expect("simulator");
        let local = Wired::start(&database, &sim, Wiring::InProcess).await;
        let in_process = script(&local, &sim).await;
        local.stop().await;
        let remote = Wired::start(&database, &sim, Wiring::Grpc).await;
        let over_grpc = script(&remote, &sim).await;
        remote.stop().await;
        sim.stop();

        assert_eq!(in_process.len(), over_grpc.len());
        for (local, remote) in in_process.iter().zip(&over_grpc) {
            assert_eq!(local, remote, "{} differs between wirings", local.call);
        }
        // The script covers successes and refusals alike.
        let statuses: std::collections::BTreeSet<u16> =
            in_process.iter().map(|s| s.status).collect();
        for status in [200, 400, 401, 403, 404] {
            assert!(statuses.contains(&status), "no {status} in {in_process:#?}");
        }
    }
);

backend_test!(
    the_gateway_forgets_accounts_it_changes_and_rereads_others_after_the_ttl,
    |database| async move {
        let sim = VercelSimulator::start_default().await.expect("simulator");
        let wired = Wired::start(&database, &sim, Wiring::InProcess).await;
        let partner = &wired.partner;

        // Changed through the gateway: seen on the very next call.
        let (installation, admin) = wired.install(&sim).await;
        let plans = format!("/v1/installations/{}/plans", installation.id);
        let read = partner.get(&plans).user(&admin).send().await;
        assert_eq!(read.status, 200, "{}", read.text);
        let system = sim.system_token(Some(&installation));
        let uninstalled = partner
            .delete(&format!("/v1/installations/{}", installation.id))
            .system(&system)
            .json(&json!({"reason": "user_request"}))
            .send()
            .await;
        assert_eq!(uninstalled.status, 200, "{}", uninstalled.text);
        let gone = partner.get(&plans).user(&admin).send().await;
        assert_eq!(
            gone.status, 404,
            "an uninstall through the gateway shows at once: {}",
            gone.text
        );
        let reinstalled = partner
            .put(&format!("/v1/installations/{}", installation.id))
            .user(&admin)
            .idempotency_key("reinstall")
            .json(&installation.upsert_body())
            .send()
            .await;
        assert_eq!(reinstalled.status, 204, "{}", reinstalled.text);
        let back = partner.get(&plans).user(&admin).send().await;
        assert_eq!(back.status, 200, "a reinstall shows at once: {}", back.text);

        // Changed elsewhere (an operator over gRPC): seen once the TTL has
        // passed, and a change through the gateway reads it fresh at once.
        let (elsewhere, elsewhere_admin) = wired.install(&sim).await;
        let elsewhere_plans = format!("/v1/installations/{}/plans", elsewhere.id);
        let read = partner
            .get(&elsewhere_plans)
            .user(&elsewhere_admin)
            .send()
            .await;
        assert_eq!(read.status, 200, "{}", read.text);
        let mut accounts = wired.set.clients.account.clone();
        let account = accounts
            .get_account(account_pb::GetAccountRequest {
                account: Some(AccountSelector::by_ref(
                    marketbridge_proto::common::v1::Marketplace::Vercel,
                    &elsewhere.id,
                )),
            })
            .await
            .expect("the account")
            .into_inner();
        accounts
            .delete_account(account_pb::DeleteAccountRequest {
                account: Some(AccountSelector::by_id(&account.id)),
                reason: "operator".into(),
                ..Default::default()
            })
            .await
            .expect("deleted elsewhere");
        let change = partner
            .post(&format!("/v1/installations/{}/resources", elsewhere.id))
            .user(&elsewhere_admin)
            .json(&provision_body("database", "free", "late", json!({})))
            .send()
            .await;
        assert_eq!(
            change.status, 404,
            "a change never uses a cached account: {}",
            change.text
        );
        wired
            .clock
            .advance(marketbridge_gateway::vercel::cache::ACCOUNT_TTL);
        let after = partner
            .get(&elsewhere_plans)
            .user(&elsewhere_admin)
            .send()
            .await;
        assert_eq!(
            after.status, 404,
            "seen once the TTL has passed: {}",
            after.text
        );

        wired.stop().await;
        sim.stop();
    }
);

backend_test!(
    an_in_process_caller_is_held_to_its_scopes_as_over_grpc,
    |database| async move {
        use marketbridge_account::grpc::AccountGrpc;
        use marketbridge_rpc::{AccountApi, InProcess};
        let (entry, token) =
            marketbridge_rpc::auth::new_client_entry("team-api", "usage").expect("an entry");
        let test = crate::support::set_on(&database)
            .configure(move |config| config.security.grpc_clients = entry)
            .start()
            .await;
        let callers =
            marketbridge_rpc::auth::Callers::parse(&test.set.config.security.grpc_clients)
                .expect("callers");
        let caller = callers.by_token(&token).expect("the team's caller");
        let local =
            InProcess::new(AccountGrpc::new(test.set.account.domain().clone())).as_caller(caller);
        let remote = marketbridge_rpc::AccountClient::new(
            marketbridge_rpc::channel(
                &test.set.config.gateway.account_url,
                &marketbridge_rpc::ClientCredentials {
                    token: Some(marketbridge_core::crypto::SecretString::new(token.clone())),
                    ..Default::default()
                },
                std::time::Duration::from_secs(5),
            )
            .expect("a channel"),
        );
        let request = account_pb::GetAccountRequest {
            account: Some(AccountSelector::by_id("acc_01jd6v3y00000000000000000")),
        };
        let refused_here = local
            .get_account(request.clone())
            .await
            .expect_err("usage alone may not read accounts");
        let refused_there = AccountApi::get_account(&remote, request)
            .await
            .expect_err("usage alone may not read accounts");
        assert_eq!(
            refused_here.code(),
            marketbridge_core::ErrorCode::PermissionDenied
        );
        assert_eq!(
            (refused_here.code(), refused_here.message()),
            (refused_there.code(), refused_there.message()),
            "refused alike in process and over gRPC"
        );
        let me = local
            .who_am_i(marketbridge_proto::common::v1::WhoAmIRequest {})
            .await
            .expect("any caller may ask who it is");
        assert_eq!(me.name, "team-api");
        assert_eq!(me.scopes, vec!["usage".to_owned()]);
        test.stop().await;
    }
);
