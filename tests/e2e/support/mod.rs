//! Starting the whole set for a test, on a fresh database per service.

#![allow(dead_code)]

use chrono::{TimeZone, Utc};
use marketbridge::set::{RunningSet, SetOptions};
use marketbridge_config::Config;
use marketbridge_core::crypto::Cipher;
use marketbridge_core::time::{ManualClock, SharedClock, system_clock};
use marketbridge_proto::common::v1::Marketplace;
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_storage::testing::TestDatabase;
use std::sync::Arc;

/// A running set and what a test needs around it.
pub struct TestSet {
    /// The set.
    pub set: RunningSet,
    /// HTTP client for the gateway.
    pub http: reqwest::Client,
    /// The manual clock, when the test drives time.
    pub clock: Option<ManualClock>,
    databases: Vec<TestDatabase>,
    data_dir: std::path::PathBuf,
    run_workers: bool,
}

/// A change a test makes to the configuration before start.
type ConfigTweak<'a> = Box<dyn FnOnce(&mut Config) + 'a>;

/// How a test wants its set.
pub struct SetBuilder<'a> {
    database: &'a TestDatabase,
    manual_clock: bool,
    given_clock: Option<ManualClock>,
    run_workers: bool,
    tweaks: Vec<ConfigTweak<'a>>,
}

/// A set on `database`'s backend (one fresh database per service).
pub fn set_on(database: &TestDatabase) -> SetBuilder<'_> {
    SetBuilder {
        database,
        manual_clock: false,
        given_clock: None,
        run_workers: true,
        tweaks: Vec::new(),
    }
}

/// Telemetry with logs only, once per test process.
pub fn init_telemetry() {
    let options = marketbridge_config::TelemetryOptions {
        log_filter: std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
        ..Default::default()
    };
    let _ = marketbridge_telemetry::init("marketbridge-test", &options);
}

impl<'a> SetBuilder<'a> {
    /// Time stands still at 2026-11-23T12:00:00Z until the test moves it.
    pub fn manual_clock(mut self) -> Self {
        self.manual_clock = true;
        self
    }

    /// Time is `clock`, which the test shares with a simulator.
    pub fn with_clock(mut self, clock: ManualClock) -> Self {
        self.given_clock = Some(clock);
        self
    }

    /// No outbox workers: the test drains the outboxes itself.
    pub fn without_workers(mut self) -> Self {
        self.run_workers = false;
        self
    }

    /// Changes the configuration before start.
    pub fn configure(mut self, tweak: impl FnOnce(&mut Config) + 'a) -> Self {
        self.tweaks.push(Box::new(tweak));
        self
    }

    /// Starts the set.
    pub async fn start(self) -> TestSet {
        init_telemetry();
        marketbridge_rpc::tls::install_crypto_provider();
        let account_db = self.database.sibling().await;
        let provisioning_db = self.database.sibling().await;
        let billing_db = self.database.sibling().await;
        let data_dir = std::env::temp_dir().join(format!(
            "marketbridge-e2e-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let mut config = Config::default();
        config.data.dir = data_dir.display().to_string();
        config.account.listen = "127.0.0.1:0".into();
        config.provisioning.listen = "127.0.0.1:0".into();
        config.billing.listen = "127.0.0.1:0".into();
        config.gateway.listen = "127.0.0.1:0".into();
        config.gateway.metrics_listen = "127.0.0.1:0".into();
        config.gateway.public_url = String::new();
        config.account.database_url = account_db.url().to_owned();
        config.provisioning.database_url = provisioning_db.url().to_owned();
        config.billing.database_url = billing_db.url().to_owned();
        config.outbox.poll_interval_ms = 20;
        config.outbox.backoff_initial_ms = 50;
        config.outbox.backoff_max_ms = 500;
        config.security.encryption_key = Cipher::generate_base64_key();
        for tweak in self.tweaks {
            tweak(&mut config);
        }
        let cipher = Cipher::from_base64_key(&config.security.encryption_key).expect("test key");
        let manual = self.given_clock.or_else(|| {
            self.manual_clock
                .then(|| ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()))
        });
        let clock: SharedClock = match &manual {
            Some(clock) => Arc::new(clock.clone()),
            None => system_clock(),
        };
        let set = RunningSet::start(SetOptions {
            config,
            clock,
            cipher,
            run_workers: self.run_workers,
        })
        .await
        .expect("the set starts");
        TestSet {
            set,
            http: reqwest::Client::builder().build().expect("HTTP client"),
            clock: manual,
            databases: vec![account_db, provisioning_db, billing_db],
            data_dir,
            run_workers: self.run_workers,
        }
    }
}

impl TestSet {
    /// The gateway URL joined with `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.set.gateway_url())
    }

    /// Our subscription for a marketplace's subscription id, if recorded.
    pub async fn subscription_at(
        &self,
        marketplace: Marketplace,
        external_id: &str,
    ) -> Option<provisioning_pb::Subscription> {
        self.set.subscription_at(marketplace, external_id).await
    }

    /// The state of our subscription for a marketplace's subscription id.
    pub async fn subscription_state_at(
        &self,
        marketplace: Marketplace,
        external_id: &str,
    ) -> provisioning_pb::SubscriptionState {
        let subscription = self
            .subscription_at(marketplace, external_id)
            .await
            .expect("subscription recorded");
        provisioning_pb::SubscriptionState::try_from(subscription.state).unwrap_or_default()
    }

    /// Resources of an account (including deleted ones).
    pub async fn resources_of(&self, account_id: &str) -> Vec<provisioning_pb::Resource> {
        self.set
            .resources_of(account_id)
            .await
            .expect("resources listed")
    }

    /// Runs every outbox until nothing is due.
    pub async fn drain(&self) -> usize {
        self.set.drain().await.expect("outboxes drain")
    }

    /// Waits until `check` holds, draining outboxes meanwhile; panics after
    /// 10 seconds with `what`.
    pub async fn eventually<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if check().await {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for: {what}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    /// Records the billing work due now (usage reports, interim billing,
    /// balances, invoices, closings), as the scheduler does on its tick.
    pub async fn run_billing(&self) -> marketbridge_billing::scheduler::DueWork {
        self.set
            .billing
            .scheduler()
            .run_due()
            .await
            .expect("billing work runs")
    }

    /// The manual clock's time.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        use marketbridge_core::time::Clock;
        self.clock.as_ref().expect("a manual clock").now()
    }

    /// Moves the manual clock forward.
    pub fn advance(&self, by: chrono::Duration) {
        self.clock.as_ref().expect("a manual clock").advance(by);
    }

    /// Stops the set and starts a new one on the same databases and
    /// configuration (new ports), as a process restart would.
    pub async fn restart(self) -> TestSet {
        let TestSet {
            set,
            http,
            clock,
            databases,
            data_dir,
            run_workers,
        } = self;
        let mut config = set.config.clone();
        set.stop().await.expect("the set stops cleanly");
        config.gateway.public_url = String::new();
        let cipher = Cipher::from_base64_key(&config.security.encryption_key).expect("test key");
        let shared: SharedClock = match &clock {
            Some(clock) => Arc::new(clock.clone()),
            None => system_clock(),
        };
        let set = RunningSet::start(SetOptions {
            config,
            clock: shared,
            cipher,
            run_workers,
        })
        .await
        .expect("the set starts again");
        TestSet {
            set,
            http,
            clock,
            databases,
            data_dir,
            run_workers,
        }
    }

    /// Stops the set.
    pub async fn stop(self) {
        let TestSet {
            set,
            databases,
            data_dir,
            ..
        } = self;
        set.stop().await.expect("the set stops cleanly");
        drop(databases);
        let _ = std::fs::remove_dir_all(data_dir);
    }
}

/// A loopback port nobody listens on, for a process the test starts and
/// that binds it itself.
///
/// Asking the kernel for port 0 and releasing it races: until the process
/// binds, the kernel may hand the same port to an outgoing connection or to
/// another test's port 0. So the port is drawn at random outside the
/// kernel's ephemeral range (`ip_local_port_range`), which the kernel never
/// hands out by itself, and checked free; this process never gets one port
/// twice.
pub fn unused_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    use rand::Rng;
    let ephemeral: Vec<u16> = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|bound| bound.parse().ok())
        .collect();
    let (ephemeral_low, ephemeral_high) = match ephemeral[..] {
        [low, high] => (low, high),
        _ => (32768, 60999),
    };
    // The wider gap around the ephemeral range, never below 10000 (where
    // well-known and registered services live).
    let below = (10000, ephemeral_low.max(10000));
    let above = (ephemeral_high.saturating_add(1).max(10000), u16::MAX);
    let (low, high) = if below.1 - below.0 >= above.1 - above.0 {
        below
    } else {
        above
    };
    assert!(
        low < high,
        "no ports outside the ephemeral range {ephemeral:?}"
    );
    let mut random = rand::thread_rng();
    for _ in 0..1000 {
        let port = random.gen_range(low..high);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && GIVEN.lock().unwrap().insert(port)
        {
            return port;
        }
    }
    panic!("no unused loopback port between {low} and {high}");
}

/// Records usage events `(id, metric, quantity, RFC 3339 time)` of a
/// subscription through the set's billing client.
pub async fn record_usage(
    set: &RunningSet,
    subscription_id: &str,
    events: &[(&str, &str, i64, &str)],
) {
    use marketbridge_proto::billing::v1 as billing_pb;
    let mut billing = set.clients.billing.clone();
    billing
        .record_usage(billing_pb::RecordUsageRequest {
            events: events
                .iter()
                .map(|(id, metric, quantity, when)| billing_pb::UsageEvent {
                    event_id: (*id).into(),
                    customer: Some(billing_pb::usage_event::Customer::SubscriptionId(
                        subscription_id.into(),
                    )),
                    metric_id: (*metric).into(),
                    quantity: *quantity,
                    occurred_at: Some(marketbridge_core::time::to_timestamp(
                        marketbridge_core::time::parse_rfc3339("occurredAt", when).expect("a time"),
                    )),
                })
                .collect(),
        })
        .await
        .expect("usage recorded");
}
