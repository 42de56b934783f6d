//! The billing service: the plan catalog as marketplaces ask for it, the
//! usage ledger internal teams write to, billing's record of which plan was
//! in force when, and (through the outbox) the usage, invoices and balances
//! each marketplace receives.
//!
//! Architecture invariant: this crate knows nothing of HTTP; marketplace
//! calls go through the marketplace client crates from outbox jobs.

pub mod adapters;
pub mod domain;
pub mod entity;
pub mod grpc;
pub mod jobs;
pub mod lifecycle;
pub mod marketplace;
pub mod migration;
pub mod model;
pub mod scheduler;
pub mod submission;

use crate::domain::BillingDomain;
use crate::grpc::BillingGrpc;
use crate::jobs::BillingJobs;
use crate::migration::Migrator;
use crate::scheduler::Scheduler;
use marketbridge_catalog::Catalog;
use marketbridge_config::{BillingOptions, Config, OutboxOptions};
use marketbridge_core::time::SharedClock;
use marketbridge_core::{Error, Result};
use marketbridge_proto::account::v1::account_service_client::AccountServiceClient;
use marketbridge_proto::billing::v1::billing_service_server::BillingServiceServer;
use marketbridge_proto::provisioning::v1::provisioning_service_client::ProvisioningServiceClient;
use marketbridge_rpc::{AccountApi, ProvisioningApi, serve_grpc};
use marketbridge_storage::outbox::{JobHandler, Outbox};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the billing service runs with besides its database.
pub struct BillingDeps {
    /// Time source.
    pub clock: SharedClock,
    /// The catalog.
    pub catalog: Arc<Catalog>,
    /// Marketplace adapters.
    pub marketplaces: marketplace::Marketplaces,
    /// The account service (marketplace credentials, account identities).
    pub accounts: Arc<dyn AccountApi>,
    /// The provisioning service (the subscriptions billing must know of).
    pub provisioning: Arc<dyn ProvisioningApi>,
    /// Schedules, settle delay and invoice settings.
    pub options: BillingOptions,
}

/// A ready billing service.
#[derive(Clone)]
pub struct BillingServer {
    domain: BillingDomain,
    jobs: Arc<BillingJobs>,
    scheduler: Scheduler,
}

impl BillingServer {
    /// Opens (and migrates) the database at `database_url`.
    pub async fn open(
        database_url: &str,
        outbox: &OutboxOptions,
        deps: BillingDeps,
    ) -> Result<Self> {
        let db = marketbridge_storage::open_migrated::<Migrator>(database_url).await?;
        let outbox = Outbox::new(db.clone(), deps.clock.clone(), outbox.clone());
        let domain = BillingDomain::new(
            db,
            deps.clock,
            outbox,
            deps.catalog,
            deps.marketplaces,
            domain::Peers {
                accounts: deps.accounts,
                provisioning: deps.provisioning,
            },
            deps.options,
        );
        let jobs = Arc::new(BillingJobs::new(domain.clone()));
        let scheduler = Scheduler::new(domain.clone());
        Ok(Self {
            domain,
            jobs,
            scheduler,
        })
    }

    /// Builds the service from configuration.
    pub async fn from_config(config: &Config, clock: SharedClock) -> Result<Self> {
        let deadline =
            std::time::Duration::from_millis(config.gateway.request_timeout_ms.max(1000) * 3);
        let accounts = AccountServiceClient::new(marketbridge_rpc::channel(
            &config.gateway.account_url,
            &marketbridge_rpc::ClientCredentials::of_set(config),
            deadline,
        )?);
        let provisioning = ProvisioningServiceClient::new(marketbridge_rpc::channel(
            &config.gateway.provisioning_url,
            &marketbridge_rpc::ClientCredentials::of_set(config),
            deadline,
        )?);
        let deps = BillingDeps {
            clock: clock.clone(),
            catalog: Arc::new(Catalog::load(&config.catalog.path)?),
            marketplaces: adapters::from_config(config, clock)?,
            accounts: Arc::new(accounts),
            provisioning: Arc::new(provisioning),
            options: config.billing.clone(),
        };
        let url = config.database_url(&config.billing.database_url, "billing");
        Self::open(&url, &config.outbox, deps).await
    }

    /// The domain operations.
    pub fn domain(&self) -> &BillingDomain {
        &self.domain
    }

    /// The scheduler of usage reports, invoices, balances and closings.
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// The outbox job handler.
    pub fn job_handler(&self) -> Arc<dyn JobHandler> {
        self.jobs.clone()
    }

    /// The tonic service.
    pub fn grpc(&self) -> BillingServiceServer<BillingGrpc> {
        BillingServiceServer::new(BillingGrpc::new(self.domain.clone()))
    }

    /// Serves gRPC on `listener` and runs the outbox worker and the
    /// scheduler until `shutdown`.
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
        let scheduler = tokio::spawn(self.scheduler.clone().run(shutdown.clone()));
        let served = serve_grpc(listener, "billing", security, self.grpc(), shutdown.clone()).await;
        shutdown.cancel();
        let _ = worker.await;
        let _ = scheduler.await;
        served
    }
}

/// Runs the billing service alone as configured until `shutdown`.
pub async fn run(config: &Config, shutdown: CancellationToken) -> Result<()> {
    let config =
        &marketbridge_rpc::secrets::resolved(config, marketbridge_rpc::secrets::Needs::SERVICE)?;
    let server =
        BillingServer::from_config(config, marketbridge_core::time::system_clock()).await?;
    let listener = TcpListener::bind(&config.billing.listen)
        .await
        .map_err(|e| {
            Error::unavailable(format!("cannot listen on {}: {e}", config.billing.listen))
        })?;
    tracing::info!(listen = %config.billing.listen, "billing service listening");
    marketbridge_rpc::process::spawn_metrics_listener(
        &config.billing.metrics_listen,
        shutdown.clone(),
    )
    .await?;
    let security = marketbridge_rpc::ServerSecurity::from_config(config)?;
    tokio::spawn(marketbridge_storage::idempotency::housekeeping(
        server.domain().db().clone(),
        None,
        std::time::Duration::from_secs(config.security.idempotency_retention_seconds),
        shutdown.clone(),
    ));
    server.serve(listener, &security, shutdown).await
}
