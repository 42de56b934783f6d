//! The provisioning service: subscriptions (a Vercel resource's plan, a
//! Google entitlement) and their state machine, the resources we run for
//! customers with their encrypted secrets, the drivers that run them, and the
//! entitlement check internal teams call.
//!
//! Architecture invariant: this crate knows nothing of HTTP or of any
//! marketplace's JSON; marketplaces plug in through [`marketplace`] traits
//! and products through [`driver`] traits.
//!
//! Layers, lowest first: [`model`] (stored states, ids, the job enum) and
//! [`lifecycle`] (the subscription and resource state machines as pure
//! functions) import nothing above them; [`entity`] and [`convert`] read and
//! write rows; [`domain`] loads rows, asks a machine and applies its effects
//! (rows, jobs) in one unit of work; [`jobs`] and [`grpc`] call the domain.
//! No remote call is made while a transaction is open: remote reads come
//! first, remote writes run as outbox jobs after the commit.
//! [`resource_cache`] answers single-resource reads between changes without
//! a database read.

pub mod adapters;
pub mod console;
pub mod convert;
pub mod domain;
pub mod driver;
pub mod entity;
pub mod grpc;
pub mod jobs;
pub mod lifecycle;
pub mod marketplace;
pub mod migration;
pub mod model;
pub mod protocol;
pub mod resource_cache;
pub mod usage;

use crate::domain::ProvisioningDomain;
use crate::driver::Drivers;
use crate::grpc::ProvisioningGrpc;
use crate::jobs::ProvisioningJobs;
use crate::marketplace::Marketplaces;
use crate::migration::Migrator;
use crate::usage::UsageMeter;
use marketbridge_catalog::{Catalog, Product};
use marketbridge_config::{Config, OutboxOptions};
use marketbridge_core::crypto::Cipher;
use marketbridge_core::time::SharedClock;
use marketbridge_core::{Error, Result};
use marketbridge_proto::provisioning::v1::provisioning_service_server::ProvisioningServiceServer;
use marketbridge_rpc::{AccountApi, BillingApi, ServiceClients, serve_grpc};
use marketbridge_storage::outbox::{JobHandler, Outbox};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the provisioning service runs with besides its database.
pub struct ProvisioningDeps {
    /// Time source.
    pub clock: SharedClock,
    /// Encryption at rest.
    pub cipher: Cipher,
    /// The catalog.
    pub catalog: Arc<Catalog>,
    /// Drivers by name.
    pub drivers: Drivers,
    /// Marketplace adapters.
    pub marketplaces: Marketplaces,
    /// The account service.
    pub accounts: Arc<dyn AccountApi>,
    /// The billing service.
    pub billing: Option<Arc<dyn BillingApi>>,
    /// How often the usage meter runs; zero turns it off.
    pub usage_interval: Duration,
}

/// A ready provisioning service.
#[derive(Clone)]
pub struct ProvisioningServer {
    domain: ProvisioningDomain,
    jobs: Arc<ProvisioningJobs>,
    usage: UsageMeter,
}

impl ProvisioningServer {
    /// Opens (and migrates) the database at `database_url`.
    pub async fn open(
        database_url: &str,
        outbox: &OutboxOptions,
        deps: ProvisioningDeps,
    ) -> Result<Self> {
        for product in deps.catalog.products() {
            let Some(driver) = deps.drivers.get(&product.driver) else {
                return Err(Error::validation(format!(
                    "catalog: product `{}` names driver `{}`; known drivers: {}",
                    product.id,
                    product.driver,
                    deps.drivers.names().join(", ")
                )));
            };
            driver.check_product(product)?;
        }
        for name in deps.drivers.names() {
            let products: Vec<&Product> = deps
                .catalog
                .products()
                .iter()
                .filter(|product| product.driver == name)
                .collect();
            if let Some(driver) = deps.drivers.get(&name)
                && !products.is_empty()
                && let Err(error) = driver.start(&products).await
            {
                tracing::error!(driver = %name, error = %error, "driver start-up step failed");
            }
        }
        let db = marketbridge_storage::open_migrated::<Migrator>(database_url).await?;
        let outbox = Outbox::new(db.clone(), deps.clock.clone(), outbox.clone());
        let domain = ProvisioningDomain::new(
            db,
            deps.clock,
            deps.cipher,
            outbox,
            deps.catalog,
            deps.drivers,
            deps.marketplaces,
            deps.accounts,
        );
        let billing = deps.billing;
        let usage = UsageMeter::new(domain.clone(), billing.clone(), deps.usage_interval);
        let jobs = Arc::new(ProvisioningJobs::new(domain.clone(), billing));
        Ok(Self {
            domain,
            jobs,
            usage,
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
        let deps = ProvisioningDeps {
            clock: clock.clone(),
            cipher,
            catalog: Arc::new(Catalog::load(&config.catalog.path)?),
            drivers: adapters::drivers(config)?,
            marketplaces: adapters::from_config(config, clock.clone())?,
            accounts: Arc::new(clients.account),
            billing: Some(Arc::new(clients.billing)),
            usage_interval: Duration::from_secs(config.provisioning.usage_interval_seconds),
        };
        let url = config.database_url(&config.provisioning.database_url, "provisioning");
        let server = Self::open(&url, &config.outbox, deps).await?;
        server
            .domain
            .resource_cache()
            .set_capacity(config.provisioning.resource_cache_entries);
        Ok(server)
    }

    /// The domain operations.
    pub fn domain(&self) -> &ProvisioningDomain {
        &self.domain
    }

    /// The outbox job handler.
    pub fn job_handler(&self) -> Arc<dyn JobHandler> {
        self.jobs.clone()
    }

    /// The usage meter (run by [`ProvisioningServer::serve`]; tests run
    /// single rounds).
    pub fn usage_meter(&self) -> &UsageMeter {
        &self.usage
    }

    /// The tonic service.
    pub fn grpc(&self) -> ProvisioningServiceServer<ProvisioningGrpc> {
        ProvisioningServiceServer::new(ProvisioningGrpc::new(self.domain.clone()))
    }

    /// Starts the listener that keeps the resource cache right across
    /// replicas on PostgreSQL (see [`resource_cache`]); it stops at
    /// `shutdown`. Until it listens, the cache serves nothing. `None` on
    /// SQLite, which needs no listener.
    pub fn spawn_change_listener(&self, shutdown: CancellationToken) -> Option<JoinHandle<()>> {
        marketbridge_storage::row_cache::spawn_listener(
            self.domain.db(),
            self.domain.resource_cache(),
            resource_cache::CHANNEL,
            shutdown,
        )
    }

    /// Starts the periodic reconciliations of the marketplaces that have
    /// one; they stop at `shutdown`.
    pub fn spawn_reconciliations(&self, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        self.domain
            .marketplaces()
            .reconciliations()
            .iter()
            .map(|&(marketplace, interval)| {
                let domain = self.domain.clone();
                let stop = shutdown.clone();
                // One replica at a time reconciles a marketplace.
                let task = format!("provisioning.reconcile.{marketplace}");
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(interval) => {}
                    }
                    let leadership = domain.outbox().leadership();
                    leadership
                        .run_elected(&task, interval, stop, || async {
                            match domain.reconcile(marketplace).await {
                                Ok(count) => {
                                    tracing::info!(marketplace = %marketplace, subscriptions = count, "subscriptions reconciled")
                                }
                                Err(error) => {
                                    tracing::warn!(marketplace = %marketplace, error = %error, "reconciliation failed")
                                }
                            }
                        })
                        .await;
                })
            })
            .collect()
    }

    /// Serves gRPC on `listener` and runs the outbox worker, the usage
    /// meter, the reconciliations and the resource change listener until
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
        let meter = tokio::spawn(self.usage.clone().run(shutdown.clone()));
        let reconciliations = self.spawn_reconciliations(shutdown.clone());
        let change_listener = self.spawn_change_listener(shutdown.clone());
        let served = serve_grpc(
            listener,
            "provisioning",
            security,
            self.grpc(),
            shutdown.clone(),
        )
        .await;
        shutdown.cancel();
        let _ = worker.await;
        let _ = meter.await;
        for task in reconciliations {
            let _ = task.await;
        }
        if let Some(task) = change_listener {
            let _ = task.await;
        }
        served
    }
}

/// Runs the provisioning service alone as configured until `shutdown`.
pub async fn run(config: &Config, shutdown: CancellationToken) -> Result<()> {
    let config = &marketbridge_rpc::secrets::resolved(
        config,
        marketbridge_rpc::secrets::Needs::SEALING_SERVICE,
    )?;
    let cipher = marketbridge_rpc::process::load_cipher(config)?;
    let server = ProvisioningServer::from_config(
        config,
        marketbridge_core::time::system_clock(),
        cipher.clone(),
    )
    .await?;
    let listener = TcpListener::bind(&config.provisioning.listen)
        .await
        .map_err(|e| {
            Error::unavailable(format!(
                "cannot listen on {}: {e}",
                config.provisioning.listen
            ))
        })?;
    tracing::info!(listen = %config.provisioning.listen, "provisioning service listening");
    marketbridge_rpc::process::spawn_metrics_listener(
        &config.provisioning.metrics_listen,
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
