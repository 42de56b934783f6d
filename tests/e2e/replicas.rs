//! Two replicas of each service on one PostgreSQL, as a provider runs them
//! when it outgrows one machine: separate `marketbridge` processes, each
//! service's pair behind a TCP load balancer (the test plays it, as haproxy
//! or a Kubernetes Service would), one gateway, and the Google simulator
//! answering slowly and failing sometimes. Mid-run the test kills one
//! replica of each service with SIGKILL (for billing and provisioning, the
//! one leading their schedules) and checks that every signup still ends
//! approved with its entitlement, that every acknowledged signup is stored,
//! that Google received each approval once, and that the survivors took the
//! schedules over.
//!
//! Billing reports while this happens: Vercel installations with a prepaid
//! resource, credited before and after the kill, make the billing scheduler
//! (whichever replica leads it) push their balances at once (one submission
//! per account and settled hour), through a Vercel API that answers slowly
//! and fails sometimes. Each ledger row (`ListUsageReports`) must end SENT,
//! and the simulators must have accepted exactly one request per row and none
//! that no row explains. Usage recorded for the Google entitlements through
//! billing's balancer is reported when each entitlement changes plan (with
//! the real clock a window otherwise closes only at the hour): one Service
//! Control operation per window, accepted once, carrying exactly the usage
//! recorded. Paid Vercel installations uninstalled after the kill are closed
//! by the survivors (the test shortens the usage clock skew to a second so a
//! closing falls due at once): each final invoice and finalization is
//! accepted once like every other report. Period-end invoices fall due only
//! at month end (any report that falls due because a run crosses an hour is
//! checked the same way).

use crate::google_support::{attribute_after, hidden_value};
use crate::support::unused_port;
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::account::v1::account_service_client::AccountServiceClient;
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_proto::billing::v1::billing_service_client::BillingServiceClient;
use marketbridge_proto::common::v1::{AccountSelector, Marketplace, MarketplaceRef, PageRequest};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_proto::provisioning::v1::provisioning_service_client::ProvisioningServiceClient;
use marketbridge_simulators::common::{Fault, RecordedCall};
use marketbridge_simulators::google::{
    GoogleSimulator, GoogleSimulatorOptions, PRODUCT, PUSH_AUDIENCE, state as google_state,
};
use marketbridge_simulators::vercel::{InstallationHandle, PartnerClient, VercelSimulator};
use marketbridge_storage::leader::Leadership;
use marketbridge_storage::testing::{TestBackend, TestDatabase};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

const SERVICES: [&str; 3] = ["account", "provisioning", "billing"];
const PURCHASES: usize = 12;
/// Vercel installations with prepaid credit, before and after the kill.
const VERCEL_CUSTOMERS: usize = 3;
/// Vercel installations on a paid plan uninstalled after the kill, each
/// closed with a final invoice and a finalization by the survivors.
const UNINSTALLED_CUSTOMERS: usize = 2;

/// A TCP load balancer: each connection goes to the next backend that
/// accepts it (a killed replica refuses connections and is skipped).
async fn balancer(backends: Vec<u16>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let next = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let start = next.fetch_add(1, Ordering::Relaxed);
            let backends = backends.clone();
            tokio::spawn(async move {
                for offset in 0..backends.len() {
                    let backend = backends[(start + offset) % backends.len()];
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", backend)).await {
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                }
            });
        }
    });
    port
}

/// One running `marketbridge <part>` process.
struct Process {
    name: String,
    child: Child,
}

impl Process {
    fn kill_hard(&mut self) {
        eprintln!("SIGKILL {}", self.name);
        let status = Command::new("kill")
            .arg("-KILL")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to `limit` for `check` to hold; false if it never did.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// A Vercel installation with a prepaid `database` resource and credit
/// bought for it, all through the gateway; returns the installation id.
async fn vercel_customer(vercel: &VercelSimulator, partner: &PartnerClient, n: usize) -> String {
    let (installation, admin, _) = vercel_installation(vercel, partner, n, "prepaid").await;
    let path = format!("/v1/installations/{}", installation.id);
    // Billing learns of the resource through provisioning's outbox; the
    // purchase is credited once it has.
    let purchase = vercel.create_invoice(&installation.id, "25.00", "paid");
    let mut last = String::new();
    for _ in 0..120 {
        let answer = partner
            .post(&format!("{path}/billing/provision"))
            .user(&admin)
            .idempotency_key(&format!("credit-{}", installation.id))
            .json(&json!({"invoiceId": purchase}))
            .send()
            .await;
        if answer.status == 200 {
            assert_eq!(
                answer.body["balances"][0]["currencyValueInCents"], 2500,
                "{}",
                answer.text
            );
            return installation.id;
        }
        last = format!("{} {}", answer.status, answer.text);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the credit of installation {n} was never accepted: {last}");
}

/// A Vercel installation with a `database` resource on `plan`, through the
/// gateway: the installation, its admin's token and the resource's id.
async fn vercel_installation(
    vercel: &VercelSimulator,
    partner: &PartnerClient,
    n: usize,
    plan: &str,
) -> (InstallationHandle, String, String) {
    let installation = vercel.new_installation();
    let admin = vercel.admin_token(&installation);
    let path = format!("/v1/installations/{}", installation.id);
    let mut done = false;
    for _ in 0..80 {
        let answer = partner
            .put(&path)
            .user(&admin)
            .idempotency_key(&format!("install-{}", installation.id))
            .json(&installation.upsert_body())
            .send()
            .await;
        if answer.status == 204 {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(done, "installation {n} was never acknowledged");
    let mut resource_id = None;
    for _ in 0..80 {
        let answer = partner
            .post(&format!("{path}/resources"))
            .user(&admin)
            .idempotency_key(&format!("provision-{}", installation.id))
            .json(&json!({
                "productId": "database",
                "name": format!("prepaid-{n}"),
                "metadata": {"region": "iad1"},
                "billingPlanId": plan,
            }))
            .send()
            .await;
        if answer.status == 200 {
            resource_id = answer.body["id"].as_str().map(str::to_owned);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let resource_id = resource_id
        .unwrap_or_else(|| panic!("the resource of installation {n} was never provisioned"));
    (installation, admin, resource_id)
}

/// A Vercel installation on a paid plan with usage beyond what the plan
/// includes, uninstalled through the gateway: billing closes it with a
/// final invoice and Vercel's finalization. Returns the installation id.
async fn uninstalled_customer(
    vercel: &VercelSimulator,
    partner: &PartnerClient,
    billing: &BillingServiceClient<tonic::transport::Channel>,
    token: &str,
    n: usize,
) -> String {
    let (installation, admin, resource_id) = vercel_installation(vercel, partner, n, "pro").await;
    let path = format!("/v1/installations/{}", installation.id);
    // Billing learns of the resource through provisioning's outbox; its
    // usage is accepted once it has.
    let event = billing_pb::UsageEvent {
        event_id: format!("closing-{}", installation.id),
        customer: Some(billing_pb::usage_event::Customer::ResourceId(
            resource_id.clone(),
        )),
        metric_id: "requests".into(),
        quantity: 1_100_000,
        occurred_at: None,
    };
    let mut accepted = false;
    for _ in 0..120 {
        let answer = billing
            .clone()
            .record_usage(authorized(
                billing_pb::RecordUsageRequest {
                    events: vec![event.clone()],
                },
                token,
            ))
            .await;
        if let Ok(answer) = answer {
            let answer = answer.into_inner();
            if answer.accepted + answer.duplicates == 1 {
                accepted = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(accepted, "the usage of {resource_id} was never accepted");
    let mut last = String::new();
    for _ in 0..120 {
        let answer = partner
            .delete(&path)
            .user(&admin)
            .json(&json!({"cascadeResourceDeletion": true}))
            .send()
            .await;
        if answer.status == 200 {
            return installation.id;
        }
        last = format!("{} {}", answer.status, answer.text);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("installation {n} was never uninstalled: {last}");
}

/// Every row of billing's reporting ledger, through the balancer.
async fn ledger(
    billing: &BillingServiceClient<tonic::transport::Channel>,
    token: &str,
) -> Vec<billing_pb::UsageReport> {
    let mut billing = billing.clone();
    let mut reports = Vec::new();
    let mut page_token = String::new();
    loop {
        let Ok(answer) = billing
            .list_usage_reports(authorized(
                billing_pb::ListUsageReportsRequest {
                    page: Some(PageRequest {
                        page_size: 500,
                        page_token: page_token.clone(),
                    }),
                    ..Default::default()
                },
                token,
            ))
            .await
        else {
            // A replica went away under this call; read again.
            reports.clear();
            page_token.clear();
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let answer = answer.into_inner();
        reports.extend(answer.reports);
        page_token = answer.page.map(|p| p.next_page_token).unwrap_or_default();
        if page_token.is_empty() {
            return reports;
        }
    }
}

/// Waits until each installation has a balances report that Vercel
/// accepted; the account ids of the installations.
async fn balances_sent(
    accounts: &AccountServiceClient<tonic::transport::Channel>,
    billing: &BillingServiceClient<tonic::transport::Channel>,
    token: &str,
    installations: &[String],
) -> bool {
    let mut account_ids = Vec::new();
    for installation in installations {
        let mut accounts = accounts.clone();
        let Ok(account) = accounts
            .get_account(authorized(
                account_pb::GetAccountRequest {
                    account: Some(AccountSelector::by_ref(Marketplace::Vercel, installation)),
                },
                token,
            ))
            .await
        else {
            return false;
        };
        account_ids.push(account.into_inner().id);
    }
    let reports = ledger(billing, token).await;
    account_ids.iter().all(|account_id| {
        reports.iter().any(|report| {
            &report.account_id == account_id
                && report.kind == "balances"
                && report.status == billing_pb::ReportStatus::Sent as i32
        })
    })
}

/// Google's signup: the token POST, then the form, retried while the
/// replica answering dies (only a 200 counts as acknowledged).
async fn sign_up(
    http: &reqwest::Client,
    gateway: &str,
    signup_path: &str,
    sim: &GoogleSimulator,
    account_id: &str,
    email: &str,
    company: &str,
) {
    for _ in 0..120 {
        let token = sim.signup_token(account_id);
        let opened = http
            .post(format!("{gateway}{signup_path}"))
            .form(&[("x-gcp-marketplace-token", token.as_str())])
            .send()
            .await;
        let page = match opened {
            Ok(answer) if answer.status() == 200 => answer.text().await.unwrap_or_default(),
            _ => {
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        let (Some(action), Some(ticket)) = (
            attribute_after(&page, "<form", "action"),
            hidden_value(&page, "ticket"),
        ) else {
            panic!("the signup page has no form: {page}");
        };
        let submitted = http
            .post(format!("{gateway}{action}"))
            .form(&[
                ("ticket", ticket.as_str()),
                ("name", "Replica Tester"),
                ("email", email),
                ("company", company),
            ])
            .send()
            .await;
        if let Ok(answer) = submitted
            && answer.status() == 200
        {
            let done = answer.text().await.unwrap_or_default();
            assert!(done.contains("You are signed up"), "{done}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the signup of {account_id} was never acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_of_each_service_survive_a_sigkill_with_every_job_done_once() {
    let Some(first_database) = TestDatabase::create(TestBackend::Postgres).await else {
        eprintln!("skipping: no PostgreSQL test server configured");
        return;
    };
    marketbridge_rpc::tls::install_crypto_provider();
    let databases = [
        first_database.sibling().await,
        first_database.sibling().await,
        first_database.sibling().await,
    ];

    // Google, slow and failing sometimes.
    let sim = Arc::new(
        GoogleSimulator::start(GoogleSimulatorOptions::new(
            marketbridge_core::time::system_clock(),
        ))
        .await
        .expect("the Google simulator starts"),
    );
    let data = std::env::temp_dir().join(format!(
        "marketbridge-replicas-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let key_file = sim
        .write_service_account_key(&data.join("service-account.json"))
        .unwrap();
    let faults = &sim.api().faults;
    faults.inject(Fault::slow(":approve", Duration::from_millis(1500), 8));
    faults.inject(Fault::status(":approve", 503, 4));
    faults.inject(Fault::slow("/accounts/", Duration::from_millis(700), 30).method("GET"));
    faults.inject(Fault::status("/entitlements/", 503, 4).method("GET"));

    // Vercel, where prepaid balances go: slow and failing sometimes too.
    let vercel = VercelSimulator::start_default()
        .await
        .expect("the Vercel simulator starts");
    vercel
        .faults()
        .inject(Fault::slow("/billing/balance", Duration::from_millis(1200), 3).method("POST"));
    vercel
        .faults()
        .inject(Fault::status("/billing/balance", 503, 3).method("POST"));

    let secrets = data.join("secrets");
    let init = Command::new(env!("CARGO_BIN_EXE_marketbridge"))
        .args(["secrets", "init"])
        .arg(&secrets)
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let token = std::fs::read_to_string(secrets.join("service.token"))
        .unwrap()
        .trim()
        .to_owned();

    // Two ports per service, a balancer in front of each pair.
    let mut replica_ports: BTreeMap<&str, [u16; 2]> = BTreeMap::new();
    let mut front: BTreeMap<&str, u16> = BTreeMap::new();
    for service in SERVICES {
        let ports = [unused_port(), unused_port()];
        replica_ports.insert(service, ports);
        front.insert(service, balancer(ports.to_vec()).await);
    }
    let gateway_port = unused_port();
    let gateway = format!("http://127.0.0.1:{gateway_port}");
    let signup_path = "/google/signup";

    let mut common: Vec<(String, String)> = vec![
        ("MARKETBRIDGE_DATA__DIR".into(), data.display().to_string()),
        (
            "MARKETBRIDGE_SECURITY__SECRETS_DIR".into(),
            secrets.display().to_string(),
        ),
        (
            "MARKETBRIDGE_GATEWAY__ACCOUNT_URL".into(),
            format!("http://127.0.0.1:{}", front["account"]),
        ),
        (
            "MARKETBRIDGE_GATEWAY__PROVISIONING_URL".into(),
            format!("http://127.0.0.1:{}", front["provisioning"]),
        ),
        (
            "MARKETBRIDGE_GATEWAY__BILLING_URL".into(),
            format!("http://127.0.0.1:{}", front["billing"]),
        ),
        ("MARKETBRIDGE_TELEMETRY__LOG_FILTER".into(), "warn".into()),
        // Quick take-over, so the test does not wait long after a kill.
        ("MARKETBRIDGE_OUTBOX__LEASE_SECONDS".into(), "6".into()),
        (
            "MARKETBRIDGE_OUTBOX__LEADER_LEASE_SECONDS".into(),
            "3".into(),
        ),
        ("MARKETBRIDGE_OUTBOX__POLL_INTERVAL_MS".into(), "100".into()),
        (
            "MARKETBRIDGE_OUTBOX__BACKOFF_INITIAL_MS".into(),
            "200".into(),
        ),
        ("MARKETBRIDGE_OUTBOX__BACKOFF_MAX_MS".into(), "2000".into()),
        ("MARKETBRIDGE_OUTBOX__MAX_ATTEMPTS".into(), "40".into()),
        (
            "MARKETBRIDGE_BILLING__REPORT_INTERVAL_SECONDS".into(),
            "1".into(),
        ),
        (
            "MARKETBRIDGE_PROVISIONING__USAGE_INTERVAL_SECONDS".into(),
            "2".into(),
        ),
    ];
    common.extend([
        ("MARKETBRIDGE_VERCEL__OIDC_ISSUER".into(), vercel.issuer()),
        ("MARKETBRIDGE_VERCEL__JWKS_URL".into(), vercel.jwks_url()),
        (
            "MARKETBRIDGE_VERCEL__API_BASE_URL".into(),
            vercel.url().to_owned(),
        ),
        (
            "MARKETBRIDGE_VERCEL__CLIENT_ID".into(),
            vercel.client_id().to_owned(),
        ),
        (
            "MARKETBRIDGE_VERCEL__CLIENT_SECRET".into(),
            vercel.client_secret().to_owned(),
        ),
        // Balances are due once per settled hour: the current one.
        (
            "MARKETBRIDGE_BILLING__USAGE_SETTLE_SECONDS".into(),
            "1".into(),
        ),
        // Closings invoice a second after the uninstall, not five minutes.
        (
            "MARKETBRIDGE_BILLING__USAGE_FUTURE_SKEW_SECONDS".into(),
            "1".into(),
        ),
    ]);
    for (key, value) in sim.settings(&key_file) {
        common.push((
            format!("MARKETBRIDGE_GOOGLE__{}", key.to_uppercase()),
            value,
        ));
    }

    let start = |name: String, part: &str, extra: Vec<(String, String)>| -> Process {
        let log = std::fs::File::create(data.join(format!("{name}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_marketbridge"))
            .arg(part)
            .envs(common.iter().cloned())
            .envs(extra)
            .env("HOSTNAME", &name)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Process { name, child }
    };
    let mut replicas: BTreeMap<String, Process> = BTreeMap::new();
    for (index, service) in SERVICES.into_iter().enumerate() {
        let section = service.to_uppercase();
        for (replica, port) in replica_ports[service].into_iter().enumerate() {
            let name = format!("{service}-{}", replica + 1);
            let process = start(
                name.clone(),
                service,
                vec![
                    (
                        format!("MARKETBRIDGE_{section}__LISTEN"),
                        format!("127.0.0.1:{port}"),
                    ),
                    (
                        format!("MARKETBRIDGE_{section}__DATABASE_URL"),
                        databases[index].url().to_owned(),
                    ),
                ],
            );
            replicas.insert(name, process);
        }
    }
    let mut gateway_process = start(
        "gateway".into(),
        "gateway",
        vec![
            (
                "MARKETBRIDGE_GATEWAY__LISTEN".into(),
                format!("127.0.0.1:{gateway_port}"),
            ),
            (
                "MARKETBRIDGE_GATEWAY__METRICS_LISTEN".into(),
                format!("127.0.0.1:{}", unused_port()),
            ),
        ],
    );

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    // Ready once the gateway finds every service SERVING; a part that stops
    // meanwhile fails the test at once, with its log.
    let started = Instant::now();
    loop {
        if matches!(
            http.get(format!("{gateway}/readyz")).send().await,
            Ok(answer) if answer.status() == 200
        ) {
            break;
        }
        for process in replicas.values_mut().chain([&mut gateway_process]) {
            if let Ok(Some(status)) = process.child.try_wait() {
                let log = std::fs::read_to_string(data.join(format!("{}.log", process.name)))
                    .unwrap_or_default();
                panic!("{} stopped at startup ({status}):\n{log}", process.name);
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the gateway never became ready; logs in {}",
            data.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sim.set_push_endpoint(&format!("{gateway}/google/pubsub"), PUSH_AUDIENCE);
    sim.start_auto_push(Duration::from_millis(100));

    // The leases of each service's periodic tasks, read from its database.
    let leases = |index: usize| {
        let url = databases[index].url().to_owned();
        async move {
            let db = marketbridge_storage::connect(&url).await.unwrap();
            Leadership::new(db, marketbridge_core::time::system_clock(), "observer", 1)
                .all()
                .await
                .unwrap()
        }
    };
    let scheduled = eventually(Duration::from_secs(30), || async {
        let billing = leases(2).await;
        let provisioning = leases(1).await;
        billing.iter().any(|l| l.name == "billing.scheduler")
            && provisioning
                .iter()
                .any(|l| l.name == "provisioning.usage_meter")
    })
    .await;
    assert!(scheduled, "the schedules were never elected");

    let account_url = format!("http://127.0.0.1:{}", front["account"]);
    let provisioning_url = format!("http://127.0.0.1:{}", front["provisioning"]);
    let billing_url = format!("http://127.0.0.1:{}", front["billing"]);
    let mut accounts = AccountServiceClient::connect(account_url).await.unwrap();
    let billing = BillingServiceClient::connect(billing_url).await.unwrap();
    let partner = vercel.partner(&format!("{gateway}/vercel"));

    // Vercel customers credited before the kill: the leader records their
    // balances and Vercel accepts them (after its injected failures) before
    // the leader dies. The kill waits for that: Vercel's billing calls carry
    // no idempotency key, so a call in flight when its replica is killed
    // could reach Vercel and be sent again by the survivor.
    let mut installations = Vec::new();
    for n in 0..VERCEL_CUSTOMERS {
        installations.push(vercel_customer(&vercel, &partner, n).await);
    }
    let sent_before_kill = eventually(Duration::from_secs(30), || {
        balances_sent(&accounts, &billing, &token, &installations)
    })
    .await;
    assert!(
        sent_before_kill,
        "the balances of {installations:?} never reached Vercel; logs in {}",
        data.display()
    );

    // Purchases with their signups racing their notifications; half before
    // the kill, half after.
    let mut purchases = Vec::new();
    let mut killed: Vec<String> = Vec::new();
    let mut uninstalled: Vec<String> = Vec::new();
    let mut signups = tokio::task::JoinSet::new();
    for n in 0..PURCHASES {
        if n == PURCHASES / 2 {
            // Kill, mid-run, the replica leading each service's schedules
            // (the first replica for account).
            for (index, service) in SERVICES.into_iter().enumerate() {
                let holders: Vec<String> = leases(index)
                    .await
                    .into_iter()
                    .map(|lease| lease.holder)
                    .collect();
                let victim = holders
                    .iter()
                    .find_map(|holder| {
                        [1, 2]
                            .into_iter()
                            .map(|r| format!("{service}-{r}"))
                            .find(|name| holder.starts_with(&format!("{name}-")))
                    })
                    .unwrap_or_else(|| format!("{service}-1"));
                replicas.get_mut(&victim).unwrap().kill_hard();
                killed.push(victim);
            }
            eprintln!("killed {killed:?}");
            // Vercel customers credited after the kill: the survivor takes
            // the scheduler over and pushes their balances.
            for n in VERCEL_CUSTOMERS..2 * VERCEL_CUSTOMERS {
                installations.push(vercel_customer(&vercel, &partner, n).await);
            }
            // Uninstalls after the kill: the survivors close them.
            for n in 0..UNINSTALLED_CUSTOMERS {
                uninstalled
                    .push(uninstalled_customer(&vercel, &partner, &billing, &token, 100 + n).await);
            }
        }
        let purchase = sim.purchase(PRODUCT, "pro-plan");
        let (http, gateway, sim) = (http.clone(), gateway.clone(), sim.clone());
        let account_id = purchase.account_id.clone();
        signups.spawn(async move {
            // Give the notification a head start sometimes, not always.
            tokio::time::sleep(Duration::from_millis(150 * (n as u64 % 4))).await;
            let email = format!("buyer-{n}@example.com");
            let company = format!("Company {n}");
            sign_up(
                &http,
                &gateway,
                signup_path,
                &sim,
                &account_id,
                &email,
                &company,
            )
            .await;
            (account_id, email, company)
        });
        purchases.push(purchase);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut acknowledged = Vec::new();
    while let Some(done) = signups.join_next().await {
        acknowledged.push(done.expect("a signup task"));
    }

    // Every signup ends approved at Google with its entitlement active.
    let all_done = eventually(Duration::from_secs(180), || async {
        purchases.iter().all(|purchase| {
            sim.account(&purchase.account_id)
                .is_some_and(|account| account.signup == "APPROVED")
                && sim
                    .entitlement(&purchase.entitlement_id)
                    .is_some_and(|entitlement| entitlement.state == google_state::ACTIVE)
        })
    })
    .await;
    let summary: Vec<String> = purchases
        .iter()
        .map(|purchase| {
            format!(
                "{}: signup {:?}, entitlement {:?}",
                purchase.account_id,
                sim.account(&purchase.account_id).map(|a| a.signup),
                sim.entitlement(&purchase.entitlement_id).map(|e| e.state)
            )
        })
        .collect();
    assert!(
        all_done,
        "not every signup ended approved with its entitlement: {summary:#?}; logs in {}",
        data.display()
    );

    // Our records agree, and every acknowledged signup is stored.
    let provisioning = ProvisioningServiceClient::connect(provisioning_url)
        .await
        .unwrap();
    for (account_id, email, company) in &acknowledged {
        let account = accounts
            .get_account(authorized(
                account_pb::GetAccountRequest {
                    account: Some(AccountSelector::by_ref(Marketplace::Google, account_id)),
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            account.signup_state,
            account_pb::SignupState::Approved as i32,
            "{account_id}"
        );
        assert_eq!(&account.company, company, "{account_id}");
        assert_eq!(&account.contact.as_ref().unwrap().email, email);
    }
    for purchase in &purchases {
        let reached_active = eventually(Duration::from_secs(60), || {
            let mut provisioning = provisioning.clone();
            let token = token.clone();
            let entitlement = purchase.entitlement_id.clone();
            async move {
                provisioning
                    .get_subscription(authorized(
                        provisioning_pb::GetSubscriptionRequest {
                            selector: Some(
                                provisioning_pb::get_subscription_request::Selector::MarketplaceRef(
                                    MarketplaceRef::new(Marketplace::Google, &entitlement),
                                ),
                            ),
                        },
                        &token,
                    ))
                    .await
                    .is_ok_and(|s| {
                        s.into_inner().state == provisioning_pb::SubscriptionState::Active as i32
                    })
            }
        })
        .await;
        assert!(
            reached_active,
            "{} is active here too",
            purchase.entitlement_id
        );
    }

    // Usage for every Google subscription, through billing's balancer. It is
    // accepted now and reported to Service Control once its hour window
    // has closed and settled.
    let mut events = Vec::new();
    let mut subscription_ids = Vec::new();
    for purchase in &purchases {
        let subscription = provisioning
            .clone()
            .get_subscription(authorized(
                provisioning_pb::GetSubscriptionRequest {
                    selector: Some(
                        provisioning_pb::get_subscription_request::Selector::MarketplaceRef(
                            MarketplaceRef::new(Marketplace::Google, &purchase.entitlement_id),
                        ),
                    ),
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner();
        subscription_ids.push(subscription.id.clone());
        events.push(billing_pb::UsageEvent {
            event_id: format!("replicas-{}", purchase.entitlement_id),
            customer: Some(billing_pb::usage_event::Customer::SubscriptionId(
                subscription.id,
            )),
            metric_id: "requests".into(),
            quantity: 1000,
            occurred_at: None,
        });
    }
    let mut recorded = None;
    for _ in 0..40 {
        match billing
            .clone()
            .record_usage(authorized(
                billing_pb::RecordUsageRequest {
                    events: events.clone(),
                },
                &token,
            ))
            .await
        {
            Ok(answer) => {
                recorded = Some(answer.into_inner());
                break;
            }
            Err(status) => {
                eprintln!("RecordUsage: {status}; again");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    let recorded = recorded.expect("usage is recorded");
    assert_eq!(
        recorded.accepted + recorded.duplicates,
        events.len() as u32,
        "{recorded:?}"
    );

    // A plan change ends a usage window now rather than at the hour: each
    // subscription's window up to its change falls due a second later and is
    // checked and reported to Service Control by the surviving scheduler
    // (Service Control failing twice first).
    sim.api()
        .faults
        .inject(Fault::status(":report", 503, 2).method("POST"));
    for purchase in &purchases {
        sim.request_plan_change(&purchase.entitlement_id, "free-plan")
            .unwrap();
    }
    let windows_reported = eventually(Duration::from_secs(40), || async {
        let reports = ledger(&billing, &token).await;
        subscription_ids.iter().all(|subscription_id| {
            reports.iter().any(|r| {
                &r.subscription_id == subscription_id
                    && r.kind == "usage"
                    && r.status == billing_pb::ReportStatus::Sent as i32
            })
        })
    })
    .await;
    let plans: Vec<String> = purchases
        .iter()
        .map(|p| format!("{:?}", sim.entitlement(&p.entitlement_id).map(|e| e.plan)))
        .collect();
    assert!(
        windows_reported,
        "every plan change closed a usage window that reached Service Control: plans {plans:?}; logs in {}",
        data.display()
    );

    // Google received each approval once (a retry after a 503 is a new
    // attempt of the same job; no job approved anything twice).
    let calls = sim.api().recorder.calls();
    for purchase in &purchases {
        for path in [
            format!("/accounts/{}:approve", purchase.account_id),
            format!("/entitlements/{}:approve", purchase.entitlement_id),
        ] {
            let accepted = calls
                .iter()
                .filter(|c| c.method == "POST" && c.path.ends_with(&path))
                .filter(|c| (200..300).contains(&c.status))
                .count();
            assert_eq!(accepted, 1, "{path} accepted once");
        }
    }
    let approvals = calls
        .iter()
        .filter(|c| c.method == "POST" && c.path.ends_with(":approve"))
        .count();
    let unavailable = calls.iter().filter(|c| c.status == 503).count();
    eprintln!(
        "{} signups, {approvals} approve calls to Google ({unavailable} answered 503 by injected faults), killed {killed:?}",
        purchases.len()
    );
    let refused: Vec<String> = calls
        .iter()
        .filter(|c| c.method == "POST" && c.path.ends_with(":approve"))
        .filter(|c| c.status >= 400 && c.status != 503)
        .map(|c| format!("{} -> {}", c.path, c.status))
        .collect();
    assert!(
        refused.is_empty(),
        "no approval was sent again after it succeeded: {refused:?}"
    );

    // The survivors lead every schedule: each lease is held by a live
    // replica and renewed after the kill.
    for (index, service) in SERVICES.into_iter().enumerate() {
        let taken_over = eventually(Duration::from_secs(30), || async {
            let now = chrono::Utc::now();
            let leases = leases(index).await;
            // Account's only schedule (reconciliation) waits an hour before
            // its first run; billing's and provisioning's run from the start.
            (service == "account" || !leases.is_empty())
                && leases.iter().all(|lease| {
                    let holder = [1, 2]
                        .into_iter()
                        .map(|r| format!("{service}-{r}"))
                        .find(|name| lease.holder.starts_with(&format!("{name}-")));
                    holder.is_some_and(|name| !killed.contains(&name) && lease.expires_at > now)
                })
        })
        .await;
        let leases = leases(index).await;
        assert!(
            taken_over,
            "{service}'s schedules run on a survivor, not on {killed:?}: {leases:?}"
        );
    }

    // Every uninstalled installation got its final invoice and Vercel's
    // finalization, from the survivors.
    let mut closed_accounts: BTreeMap<String, String> = BTreeMap::new();
    for installation in &uninstalled {
        let account = accounts
            .get_account(authorized(
                account_pb::GetAccountRequest {
                    account: Some(AccountSelector::by_ref(Marketplace::Vercel, installation)),
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner();
        closed_accounts.insert(account.id, installation.clone());
    }
    let closings_sent = eventually(Duration::from_secs(60), || async {
        let reports = ledger(&billing, &token).await;
        closed_accounts.keys().all(|account_id| {
            ["invoice", "finalize"].iter().all(|kind| {
                reports.iter().any(|r| {
                    &r.account_id == account_id
                        && r.kind == *kind
                        && r.status == billing_pb::ReportStatus::Sent as i32
                })
            })
        })
    })
    .await;
    assert!(
        closings_sent,
        "every uninstall ended with its final invoice and finalization sent: {:?}; logs in {}",
        ledger(&billing, &token)
            .await
            .iter()
            .filter(|r| closed_accounts.contains_key(&r.account_id))
            .map(|r| format!("{} {} {}", r.account_id, r.kind, r.status))
            .collect::<Vec<_>>(),
        data.display()
    );

    // Every usage report went out once: each ledger row is SENT, the
    // marketplace accepted exactly one request carrying it, and accepted
    // nothing that no row explains.
    let all_sent = eventually(Duration::from_secs(30), || async {
        let reports = ledger(&billing, &token).await;
        !reports.is_empty()
            && reports
                .iter()
                .all(|r| r.status == billing_pb::ReportStatus::Sent as i32)
    })
    .await;
    let reports = ledger(&billing, &token).await;
    let unsettled: Vec<String> = reports
        .iter()
        .filter(|r| r.status != billing_pb::ReportStatus::Sent as i32)
        .map(|r| format!("{} {} {} {}", r.id, r.kind, r.status, r.response))
        .collect();
    assert!(
        all_sent,
        "every report was delivered: {unsettled:?}; logs in {}",
        data.display()
    );
    let mut installation_of: BTreeMap<String, String> = BTreeMap::new();
    for installation in &installations {
        let account = accounts
            .get_account(authorized(
                account_pb::GetAccountRequest {
                    account: Some(AccountSelector::by_ref(Marketplace::Vercel, installation)),
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner();
        installation_of.insert(account.id, installation.clone());
    }
    for (account_id, installation) in &installation_of {
        assert!(
            reports
                .iter()
                .any(|r| &r.account_id == account_id && r.kind == "balances"),
            "the balances of {installation} were reported"
        );
    }
    installation_of.extend(closed_accounts.clone());
    let vercel_calls = vercel.recorder().calls();
    let google_calls = sim.api().recorder.calls();
    let accepted = |c: &RecordedCall| c.method == "POST" && (200..300).contains(&c.status);
    // Vercel's billing submissions, and Service Control's reports.
    let submissions: Vec<_> = vercel_calls
        .iter()
        .filter(|c| c.path.starts_with("/v1/installations/") && c.path.contains("/billing"))
        .filter(|c| c.method == "POST")
        .chain(google_calls.iter().filter(|c| c.path.ends_with(":report")))
        .collect();
    let carries = |report: &billing_pb::UsageReport, call: &RecordedCall| {
        if report.marketplace == Marketplace::Google as i32 {
            return call.path.ends_with(":report") && call.body.contains(&report.idempotency_key);
        }
        let Some(installation) = installation_of.get(&report.account_id) else {
            return false;
        };
        let endpoint = match report.kind.as_str() {
            "invoice" => "/billing/invoices",
            "balances" => "/billing/balance",
            "finalize" => "/billing/finalize",
            _ => "/billing",
        };
        call.path == format!("/v1/installations/{installation}{endpoint}")
            && (report.request_json.is_empty()
                || serde_json::from_str::<Value>(&call.body).ok()
                    == serde_json::from_str::<Value>(&report.request_json).ok())
    };
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for report in &reports {
        *kinds.entry(report.kind.clone()).or_default() += 1;
        let tries = submissions.iter().filter(|c| carries(report, c)).count();
        let taken = submissions
            .iter()
            .filter(|c| accepted(c))
            .filter(|c| carries(report, c))
            .count();
        assert_eq!(
            taken, 1,
            "report {} ({} for {}) was accepted once ({tries} requests, {} attempts recorded)",
            report.id, report.kind, report.account_id, report.attempts
        );
    }
    for call in submissions.iter().filter(|c| accepted(c)) {
        let explained = reports.iter().filter(|r| carries(r, call)).count();
        assert_eq!(
            explained, 1,
            "{} {} is one report: {}",
            call.method, call.path, call.body
        );
    }
    // Google accepted each usage operation once, with what was recorded.
    let operations = sim.reported_operations();
    let usage_reports = kinds.get("usage").copied().unwrap_or_default();
    assert_eq!(operations.len(), usage_reports, "{operations:#?}");
    let mut operation_ids: Vec<&str> = operations
        .iter()
        .map(|op| op["operationId"].as_str().unwrap())
        .collect();
    operation_ids.sort();
    operation_ids.dedup();
    assert_eq!(
        operation_ids.len(),
        operations.len(),
        "one operation per id"
    );
    let requests: i64 = operations
        .iter()
        .flat_map(|op| op["metricValueSets"].as_array().unwrap())
        .filter(|set| {
            set["metricName"]
                .as_str()
                .is_some_and(|name| name.ends_with("/pro_requests"))
        })
        .flat_map(|set| set["metricValues"].as_array().unwrap())
        .map(|value| {
            value["int64Value"]
                .as_str()
                .unwrap()
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    assert_eq!(
        requests,
        1000 * purchases.len() as i64,
        "Google billed exactly the usage recorded"
    );
    let invoices = kinds.get("invoice").copied().unwrap_or_default();
    assert!(
        invoices >= UNINSTALLED_CUSTOMERS,
        "a final invoice per uninstall: {kinds:?}"
    );
    let failed = submissions.iter().filter(|c| c.status >= 500).count();
    eprintln!(
        "{} reports {kinds:?} from {} Vercel installations, each accepted once; {} submissions in all ({failed} answered 5xx by injected faults); {invoices} invoices (final invoices of {} uninstalls); {} usage events accepted for Google",
        reports.len(),
        installations.len(),
        submissions.len(),
        uninstalled.len(),
        recorded.accepted + recorded.duplicates,
    );

    sim.stop_auto_push();
    vercel.stop();
    drop(replicas);
    let _ = std::fs::remove_dir_all(&data);
}
