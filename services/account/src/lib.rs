//! The account service: customer accounts across marketplaces (a Vercel
//! installation and a Google procurement account are both an account), the
//! people behind them, accepted terms, stored marketplace credentials, the
//! provider signup, and the inbox of marketplace notifications.
//!
//! Architecture invariant: this crate knows nothing of HTTP or of any
//! marketplace's JSON; marketplaces plug in through [`marketplace`] traits.

pub mod account_cache;
pub mod adapter;
pub mod adapters;
pub mod convert;
pub mod domain;
pub mod entity;
pub mod grpc;
pub mod jobs;
pub mod lifecycle;
pub mod marketplace;
pub mod migration;
pub mod model;

use crate::domain::AccountDomain;
use crate::grpc::AccountGrpc;
use crate::jobs::AccountJobs;
use crate::marketplace::{EventServices, Marketplaces};
use crate::migration::Migrator;
use marketbridge_config::{Config, OutboxOptions};
use marketbridge_core::crypto::Cipher;
use marketbridge_core::time::SharedClock;
use marketbridge_core::{Error, Result};
use marketbridge_proto::account::v1::account_service_server::AccountServiceServer;
use marketbridge_rpc::{BillingApi, ProvisioningApi, ServiceClients, serve_grpc};
use marketbridge_storage::outbox::{JobHandler, Outbox};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the account service runs with besides its database.
pub struct AccountDeps {
    /// Time source.
    pub clock: SharedClock,
    /// Encryption at rest.
    pub cipher: Cipher,
    /// Marketplace adapters and event processors.
    pub marketplaces: Marketplaces,
    /// The provisioning service.
    pub provisioning: Option<Arc<dyn ProvisioningApi>>,
    /// The billing service.
    pub billing: Option<Arc<dyn BillingApi>>,
}

/// A ready account service: migrated database, domain and job handler.
#[derive(Clone)]
pub struct AccountServer {
    domain: AccountDomain,
    services: EventServices,
    marketplaces: Marketplaces,
    jobs: Arc<AccountJobs>,
}

impl AccountServer {
    /// Opens (and migrates) the database at `database_url`.
    pub async fn open(
        database_url: &str,
        outbox: &OutboxOptions,
        deps: AccountDeps,
    ) -> Result<Self> {
        let db = marketbridge_storage::open_migrated::<Migrator>(database_url).await?;
        let outbox = Outbox::new(db.clone(), deps.clock.clone(), outbox.clone());
        let domain = AccountDomain::new(
            db,
            deps.clock,
            deps.cipher,
            outbox,
            deps.marketplaces.adapters().clone(),
        );
        let services = EventServices {
            accounts: domain.clone(),
            provisioning: deps.provisioning,
            billing: deps.billing,
        };
        Ok(Self {
            domain,
            jobs: Arc::new(AccountJobs::new(
                services.clone(),
                deps.marketplaces.clone(),
            )),
            services,
            marketplaces: deps.marketplaces,
        })
    }

    /// Builds the service from configuration.
    pub async fn from_config(config: &Config, clock: SharedClock, cipher: Cipher) -> Result<Self> {
        let deadline = Duration::from_millis(config.gateway.request_timeout_ms.max(1000) * 3);
        let clients = ServiceClients::connect(
            &config.gateway.account_url,
            &config.gateway.provisioning_url,
            &config.gateway.billing_url,
            &marketbridge_rpc::ClientCredentials::of_set(config),
            deadline,
        )?;
        let deps = AccountDeps {
            clock: clock.clone(),
            cipher,
            marketplaces: adapters::from_config(config, clock.clone())?,
            provisioning: Some(Arc::new(clients.provisioning)),
            billing: Some(Arc::new(clients.billing)),
        };
        let url = config.database_url(&config.account.database_url, "account");
        let server = Self::open(&url, &config.outbox, deps).await?;
        server
            .domain
            .account_cache()
            .set_capacity(config.account.account_cache_entries);
        Ok(server)
    }

    /// The domain operations.
    pub fn domain(&self) -> &AccountDomain {
        &self.domain
    }

    /// The outbox job handler (tests drain the outbox with it).
    pub fn job_handler(&self) -> Arc<dyn JobHandler> {
        self.jobs.clone()
    }

    /// The tonic service.
    pub fn grpc(&self) -> AccountServiceServer<AccountGrpc> {
        AccountServiceServer::new(AccountGrpc::new(self.domain.clone()))
    }

    /// Runs one round of the marketplace background work named `name`
    /// (`google.pull`, `google.reconcile_accounts`); returns how much it did.
    pub async fn run_marketplace_work(&self, name: &str) -> Result<usize> {
        let mut done = 0;
        let mut found = false;
        for worker in self.marketplaces.workers() {
            if worker.name() == name {
                found = true;
                done += worker.run_once(&self.services).await?;
            }
        }
        if !found {
            return Err(Error::not_found(format!(
                "no marketplace work named `{name}`"
            )));
        }
        Ok(done)
    }

    /// Starts the marketplace background work (pulling notifications,
    /// reconciling accounts); it stops at `shutdown`.
    pub fn spawn_marketplace_workers(&self, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        self.marketplaces
            .workers()
            .iter()
            .map(|worker| {
                let worker = worker.clone();
                let services = self.services.clone();
                let stop = shutdown.clone();
                // One replica at a time runs each marketplace's background
                // work; the others ask again every third of the lease.
                let leadership = self.domain.outbox().leadership();
                let ask_every = Duration::from_millis(
                    (leadership_lease_ms(&self.domain) / 3).max(50),
                );
                tokio::spawn(async move {
                    let task = format!("account.{}", worker.name());
                    let mut pause = worker.first_delay();
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => {
                                let _ = leadership.step_down(&task).await;
                                return;
                            }
                            _ = tokio::time::sleep(pause) => {}
                        }
                        match leadership.try_lead(&task).await {
                            Ok(Some(_)) => {}
                            Ok(None) => {
                                pause = ask_every;
                                continue;
                            }
                            Err(error) => {
                                tracing::warn!(worker = worker.name(), error = %error, "leader election failed");
                                pause = ask_every;
                                continue;
                            }
                        }
                        let done = match worker.run_once(&services).await {
                            Ok(done) => done,
                            Err(error) => {
                                tracing::warn!(worker = worker.name(), error = %error, "marketplace work failed");
                                0
                            }
                        };
                        pause = worker.pause_after(done);
                    }
                })
            })
            .collect()
    }

    /// Starts the listener that keeps the account cache right across
    /// replicas on PostgreSQL (see [`account_cache`]); it stops at
    /// `shutdown`. Until it listens, the cache serves nothing. `None` on
    /// SQLite, which needs no listener.
    pub fn spawn_change_listener(&self, shutdown: CancellationToken) -> Option<JoinHandle<()>> {
        marketbridge_storage::row_cache::spawn_listener(
            self.domain.db(),
            self.domain.account_cache(),
            account_cache::CHANNEL,
            shutdown,
        )
    }

    /// Serves gRPC on `listener` and runs the outbox worker, the
    /// marketplace background work and the account change listener until
    /// `shutdown`.
    pub async fn serve(
        self,
        listener: TcpListener,
        security: &marketbridge_rpc::ServerSecurity,
        shutdown: CancellationToken,
    ) -> Result<()> {
        let worker = tokio::spawn(
            self.domain
                .outbox()
                .clone()
                .run(self.jobs.clone(), shutdown.clone()),
        );
        let background = self.spawn_marketplace_workers(shutdown.clone());
        let change_listener = self.spawn_change_listener(shutdown.clone());
        let served = serve_grpc(listener, "account", security, self.grpc(), shutdown.clone()).await;
        shutdown.cancel();
        let _ = worker.await;
        for task in background {
            let _ = task.await;
        }
        if let Some(task) = change_listener {
            let _ = task.await;
        }
        served
    }
}

/// The lease of periodic tasks in the account database, in milliseconds.
fn leadership_lease_ms(domain: &AccountDomain) -> u64 {
    domain.outbox().options().leader_lease_seconds.max(1) * 1000
}

/// Runs the account service alone as configured until `shutdown`.
pub async fn run(config: &Config, shutdown: CancellationToken) -> Result<()> {
    let config = &marketbridge_rpc::secrets::resolved(
        config,
        marketbridge_rpc::secrets::Needs::SEALING_SERVICE,
    )?;
    let cipher = marketbridge_rpc::process::load_cipher(config)?;
    let server = AccountServer::from_config(
        config,
        marketbridge_core::time::system_clock(),
        cipher.clone(),
    )
    .await?;
    let listener = TcpListener::bind(&config.account.listen)
        .await
        .map_err(|e| {
            Error::unavailable(format!("cannot listen on {}: {e}", config.account.listen))
        })?;
    tracing::info!(listen = %config.account.listen, "account service listening");
    marketbridge_rpc::process::spawn_metrics_listener(
        &config.account.metrics_listen,
        shutdown.clone(),
    )
    .await?;
    let security = marketbridge_rpc::ServerSecurity::from_config(config)?;
    tokio::spawn(marketbridge_storage::idempotency::housekeeping(
        server.domain().db().clone(),
        Some(cipher.clone()),
        std::time::Duration::from_secs(config.security.idempotency_retention_seconds),
        shutdown.clone(),
    ));
    server.serve(listener, &security, shutdown).await
}
