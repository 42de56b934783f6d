//! Starting and stopping the three services and the gateway together.

use marketbridge_account::AccountDeps;
use marketbridge_account::AccountServer;
use marketbridge_billing::BillingDeps;
use marketbridge_billing::BillingServer;
use marketbridge_catalog::Catalog;
use marketbridge_config::Config;
use marketbridge_core::crypto::Cipher;
use marketbridge_core::time::SharedClock;
use marketbridge_core::{Error, Result};
use marketbridge_gateway::Gateway;
use marketbridge_gateway::state::Services as GatewayServices;
use marketbridge_proto::common::v1::{Marketplace, MarketplaceRef};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_provisioning::ProvisioningDeps;
use marketbridge_provisioning::ProvisioningServer;
use marketbridge_rpc::ServiceClients;
use marketbridge_rpc::{AccountApi, BillingApi, Deferred, InProcess, ProvisioningApi};
use marketbridge_storage::outbox::JobHandler;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Where each part listens.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    /// Account service (gRPC).
    pub account: SocketAddr,
    /// Provisioning service (gRPC).
    pub provisioning: SocketAddr,
    /// Billing service (gRPC).
    pub billing: SocketAddr,
    /// Gateway (HTTP or HTTPS).
    pub gateway: SocketAddr,
    /// Prometheus `/metrics` of the whole set (`gateway.metrics_listen`),
    /// when configured.
    pub metrics: Option<SocketAddr>,
}

/// How to start the set.
#[derive(Clone)]
pub struct SetOptions {
    /// Configuration; listen addresses may use port 0.
    pub config: Config,
    /// Time source of every service.
    pub clock: SharedClock,
    /// Encryption at rest.
    pub cipher: Cipher,
    /// Run the outbox workers, the usage meter and the billing scheduler in
    /// the background (tests may drain, run meter rounds and run the due
    /// billing work themselves instead).
    pub run_workers: bool,
}

/// How the parts of the set call each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wiring {
    /// Through the service traits in this process ([`InProcess`]): no
    /// network hop, with the same spans, caller, scopes, deadlines and
    /// errors as over gRPC. What `marketbridge up` runs.
    InProcess,
    /// Over gRPC on loopback, as separate processes do (tests compare the
    /// two).
    Grpc,
}

/// A running set.
pub struct RunningSet {
    /// Where each part listens.
    pub addresses: Addresses,
    /// The configuration in effect (with the bound addresses).
    pub config: Config,
    /// The account service.
    pub account: AccountServer,
    /// The provisioning service.
    pub provisioning: ProvisioningServer,
    /// The billing service.
    pub billing: BillingServer,
    /// Clients of the three services.
    pub clients: ServiceClients,
    shutdown: CancellationToken,
    serving_stop: CancellationToken,
    tasks: JoinSet<Result<()>>,
    background_stop: CancellationToken,
    background: JoinSet<Result<()>>,
}

async fn bind(address: &str) -> Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|e| Error::unavailable(format!("cannot listen on {address}: {e}")))
}

fn service_url(scheme: &str, address: SocketAddr) -> String {
    format!("{scheme}://{address}")
}

impl RunningSet {
    /// Binds every listener, opens the databases, and starts serving; the
    /// parts call each other in process ([`Wiring::InProcess`]).
    pub async fn start(options: SetOptions) -> Result<Self> {
        Self::start_wired(options, Wiring::InProcess).await
    }

    /// [`RunningSet::start`] with the parts calling each other as `wiring`
    /// says.
    pub async fn start_wired(options: SetOptions, wiring: Wiring) -> Result<Self> {
        let mut config = options.config;
        // The parts of one process share a token and a session secret made
        // for it unless they are given (`marketbridge up` keeps its own in
        // the data folder, so grpcurl and sessions outlive a restart).
        let encryption_key = std::mem::take(&mut config.security.encryption_key);
        marketbridge_rpc::secrets::fill_ephemeral(&mut config);
        config.security.encryption_key = encryption_key;
        marketbridge_rpc::secrets::validate(&config)?;
        let security = marketbridge_rpc::ServerSecurity::from_config(&config)?;
        let account_listener = bind(&config.account.listen).await?;
        let provisioning_listener = bind(&config.provisioning.listen).await?;
        let billing_listener = bind(&config.billing.listen).await?;
        let gateway_listener =
            std::net::TcpListener::bind(&config.gateway.listen).map_err(|e| {
                Error::unavailable(format!("cannot listen on {}: {e}", config.gateway.listen))
            })?;
        let metrics_listener = match config.gateway.metrics_listen.as_str() {
            "" => None,
            address => Some(bind(address).await?),
        };
        let addresses = Addresses {
            metrics: metrics_listener.as_ref().map(local).transpose()?,
            account: local(&account_listener)?,
            provisioning: local(&provisioning_listener)?,
            billing: local(&billing_listener)?,
            gateway: gateway_listener
                .local_addr()
                .map_err(|e| Error::internal(e.to_string()))?,
        };
        let scheme = if config.tls.service_cert.is_empty() {
            "http"
        } else {
            "https"
        };
        config.gateway.account_url = service_url(scheme, addresses.account);
        config.gateway.provisioning_url = service_url(scheme, addresses.provisioning);
        config.gateway.billing_url = service_url(scheme, addresses.billing);
        if config.gateway.public_url.is_empty() || config.gateway.public_url.ends_with(":0") {
            let web = if config.tls.gateway_cert.is_empty() {
                "http"
            } else {
                "https"
            };
            config.gateway.public_url = format!("{web}://{}", addresses.gateway);
        }

        let gateway_deadline = Duration::from_millis(config.gateway.request_timeout_ms);
        let clients = ServiceClients::connect(
            &config.gateway.account_url,
            &config.gateway.provisioning_url,
            &config.gateway.billing_url,
            &marketbridge_rpc::ClientCredentials::of_set(&config),
            gateway_deadline,
        )?;
        let (account, provisioning, billing, gateway) = match wiring {
            Wiring::InProcess => {
                let (account, provisioning, billing) =
                    open_wired(&config, &options.clock, &options.cipher).await?;
                let services = in_process(&account, &provisioning, &billing, gateway_deadline);
                let gateway = Gateway::with_services(
                    &config,
                    clients.clone(),
                    GatewayServices {
                        accounts: services.0,
                        provisioning: services.1,
                        billing: services.2,
                    },
                    options.clock.clone(),
                )?;
                (account, provisioning, billing, gateway)
            }
            Wiring::Grpc => {
                let (clock, cipher) = (options.clock.clone(), options.cipher.clone());
                let (account, provisioning, billing) = tokio::try_join!(
                    Box::pin(AccountServer::from_config(
                        &config,
                        clock.clone(),
                        cipher.clone()
                    )),
                    Box::pin(ProvisioningServer::from_config(
                        &config,
                        clock.clone(),
                        cipher
                    )),
                    Box::pin(BillingServer::from_config(&config, clock.clone())),
                )?;
                let gateway = Gateway::with_clock(&config, clients.clone(), clock)?;
                (account, provisioning, billing, gateway)
            }
        };

        // Stopping happens in two steps: background work first (so no job
        // runs against a server that is already gone), then the servers.
        let shutdown = CancellationToken::new();
        let background_stop = CancellationToken::new();
        let serving_stop = CancellationToken::new();
        let mut background = JoinSet::new();
        let mut tasks = JoinSet::new();
        if options.run_workers {
            let retention = Duration::from_secs(config.security.idempotency_retention_seconds);
            for (db, seal) in [
                (account.domain().db(), Some(options.cipher.clone())),
                (provisioning.domain().db(), Some(options.cipher.clone())),
                (billing.domain().db(), None),
            ] {
                let (db, stop) = (db.clone(), background_stop.clone());
                background.spawn(async move {
                    marketbridge_storage::idempotency::housekeeping(db, seal, retention, stop)
                        .await;
                    Ok(())
                });
            }
            spawn_worker(
                &mut background,
                account.domain().outbox().clone(),
                account.job_handler(),
                &background_stop,
            );
            spawn_worker(
                &mut background,
                provisioning.domain().outbox().clone(),
                provisioning.job_handler(),
                &background_stop,
            );
            spawn_worker(
                &mut background,
                billing.domain().outbox().clone(),
                billing.job_handler(),
                &background_stop,
            );
            let (meter, stop) = (provisioning.usage_meter().clone(), background_stop.clone());
            background.spawn(async move {
                meter.run(stop).await;
                Ok(())
            });
            let (scheduler, stop) = (billing.scheduler().clone(), background_stop.clone());
            background.spawn(async move {
                scheduler.run(stop).await;
                Ok(())
            });
            let background_work = account
                .spawn_marketplace_workers(background_stop.clone())
                .into_iter()
                .chain(provisioning.spawn_reconciliations(background_stop.clone()));
            for task in background_work {
                background.spawn(async move {
                    let _ = task.await;
                    Ok(())
                });
            }
        }
        // The resource and account caches' listeners (PostgreSQL) run while
        // the set serves, workers or not: without them the caches serve
        // nothing.
        let listeners = [
            provisioning.spawn_change_listener(serving_stop.clone()),
            account.spawn_change_listener(serving_stop.clone()),
        ];
        for listener in listeners.into_iter().flatten() {
            tasks.spawn(async move {
                let _ = listener.await;
                Ok(())
            });
        }
        {
            let (grpc, security, stop) = (account.grpc(), security.clone(), serving_stop.clone());
            tasks.spawn(async move {
                marketbridge_rpc::serve_grpc(account_listener, "account", &security, grpc, stop)
                    .await
            });
        }
        {
            let (grpc, security, stop) =
                (provisioning.grpc(), security.clone(), serving_stop.clone());
            tasks.spawn(async move {
                marketbridge_rpc::serve_grpc(
                    provisioning_listener,
                    "provisioning",
                    &security,
                    grpc,
                    stop,
                )
                .await
            });
        }
        {
            let (grpc, security, stop) = (billing.grpc(), security, serving_stop.clone());
            tasks.spawn(async move {
                marketbridge_rpc::serve_grpc(billing_listener, "billing", &security, grpc, stop)
                    .await
            });
        }
        {
            let stop = serving_stop.clone();
            tasks.spawn(async move { gateway.serve(gateway_listener, stop).await });
        }
        if let Some(listener) = metrics_listener {
            let stop = serving_stop.clone();
            tasks.spawn(async move {
                marketbridge_telemetry::serve_metrics(listener, stop.cancelled_owned())
                    .await
                    .map_err(|e| Error::unavailable(format!("metrics listener: {e}")))
            });
        }
        Ok(Self {
            addresses,
            config,
            account,
            provisioning,
            billing,
            clients,
            shutdown,
            serving_stop,
            tasks,
            background_stop,
            background,
        })
    }

    /// Runs every outbox until no job is due; returns how many jobs ran.
    pub async fn drain(&self) -> Result<usize> {
        let mut total = 0;
        loop {
            let ran = self
                .account
                .domain()
                .outbox()
                .drain(self.account.job_handler().as_ref())
                .await?
                + self
                    .provisioning
                    .domain()
                    .outbox()
                    .drain(self.provisioning.job_handler().as_ref())
                    .await?
                + self
                    .billing
                    .domain()
                    .outbox()
                    .drain(self.billing.job_handler().as_ref())
                    .await?;
            if ran == 0 {
                return Ok(total);
            }
            total += ran;
        }
    }

    /// Our subscription for a marketplace's subscription id, when recorded.
    pub async fn subscription_at(
        &self,
        marketplace: Marketplace,
        external_id: &str,
    ) -> Option<provisioning_pb::Subscription> {
        self.clients
            .provisioning
            .clone()
            .get_subscription(provisioning_pb::GetSubscriptionRequest {
                selector: Some(
                    provisioning_pb::get_subscription_request::Selector::MarketplaceRef(
                        MarketplaceRef::new(marketplace, external_id),
                    ),
                ),
            })
            .await
            .ok()
    }

    /// Every resource of an account, deleted ones included.
    pub async fn resources_of(&self, account_id: &str) -> Result<Vec<provisioning_pb::Resource>> {
        self.clients
            .provisioning
            .clone()
            .list_resources(provisioning_pb::ListResourcesRequest {
                account_id: account_id.to_owned(),
                include_deleted: true,
                ..Default::default()
            })
            .await
            .map(|page| page.resources)
    }

    /// The gateway's base URL.
    pub fn gateway_url(&self) -> String {
        self.config.gateway.public_url.clone()
    }

    /// A token that stops the set when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the set stops (the token is cancelled or a part fails);
    /// stops every part and returns the first failure.
    pub async fn wait(mut self) -> Result<()> {
        let mut first_error = None;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                joined = self.tasks.join_next() => match joined {
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(error))) => { first_error.get_or_insert(error); break; }
                    Some(Err(join_error)) => { first_error.get_or_insert(Error::internal(join_error.to_string())); break; }
                    None => break,
                },
            }
        }
        self.shutdown.cancel();
        self.background_stop.cancel();
        while let Some(joined) = self.background.join_next().await {
            if let Ok(Err(error)) = joined {
                first_error.get_or_insert(error);
            }
        }
        self.serving_stop.cancel();
        while let Some(joined) = self.tasks.join_next().await {
            if let Ok(Err(error)) = joined {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stops every part and waits for them.
    pub async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }
}

fn local(listener: &TcpListener) -> Result<SocketAddr> {
    listener
        .local_addr()
        .map_err(|e| Error::internal(e.to_string()))
}

fn spawn_worker(
    tasks: &mut JoinSet<Result<()>>,
    outbox: marketbridge_storage::outbox::Outbox,
    handler: Arc<dyn JobHandler>,
    shutdown: &CancellationToken,
) {
    let stop = shutdown.clone();
    tasks.spawn(async move {
        outbox.run(handler, stop).await;
        Ok(())
    });
}

/// The three services, each given the others in process (through
/// [`Deferred`] handles wired once all three exist), so they call each other
/// without a network hop, with the deadline their gRPC clients would have.
async fn open_wired(
    config: &Config,
    clock: &SharedClock,
    cipher: &Cipher,
) -> Result<(AccountServer, ProvisioningServer, BillingServer)> {
    let accounts = Deferred::<dyn AccountApi>::new();
    let provisioning_peer = Deferred::<dyn ProvisioningApi>::new();
    let billing_peer = Deferred::<dyn BillingApi>::new();
    let catalog = Arc::new(Catalog::load(&config.catalog.path)?);
    // The three databases open (and migrate) side by side: start-up waits
    // for the slowest, not for the sum.
    let account_url = config.database_url(&config.account.database_url, "account");
    let provisioning_url = config.database_url(&config.provisioning.database_url, "provisioning");
    let billing_url = config.database_url(&config.billing.database_url, "billing");
    // Each boxed: side by side, their futures would otherwise sit inline
    // in the caller's, which is more than a test thread's stack holds.
    let (account, provisioning, billing) = tokio::try_join!(
        Box::pin(AccountServer::open(
            &account_url,
            &config.outbox,
            AccountDeps {
                clock: clock.clone(),
                cipher: cipher.clone(),
                marketplaces: marketbridge_account::adapters::from_config(config, clock.clone())?,
                provisioning: Some(Arc::new(provisioning_peer.clone())),
                billing: Some(Arc::new(billing_peer.clone())),
            },
        )),
        Box::pin(ProvisioningServer::open(
            &provisioning_url,
            &config.outbox,
            ProvisioningDeps {
                clock: clock.clone(),
                cipher: cipher.clone(),
                catalog: catalog.clone(),
                drivers: marketbridge_provisioning::adapters::drivers(config)?,
                marketplaces: marketbridge_provisioning::adapters::from_config(
                    config,
                    clock.clone()
                )?,
                accounts: Arc::new(accounts.clone()),
                billing: Some(Arc::new(billing_peer.clone())),
                usage_interval: Duration::from_secs(config.provisioning.usage_interval_seconds),
            },
        )),
        Box::pin(BillingServer::open(
            &billing_url,
            &config.outbox,
            BillingDeps {
                clock: clock.clone(),
                catalog,
                marketplaces: marketbridge_billing::adapters::from_config(config, clock.clone())?,
                accounts: Arc::new(accounts.clone()),
                provisioning: Arc::new(provisioning_peer.clone()),
                options: config.billing.clone(),
            },
        )),
    )?;
    provisioning
        .domain()
        .resource_cache()
        .set_capacity(config.provisioning.resource_cache_entries);
    account
        .domain()
        .account_cache()
        .set_capacity(config.account.account_cache_entries);
    // The deadline the services' gRPC clients of each other have.
    let deadline = Duration::from_millis(config.gateway.request_timeout_ms.max(1000) * 3);
    let (a, p, b) = in_process(&account, &provisioning, &billing, deadline);
    accounts.wire(a);
    provisioning_peer.wire(p);
    billing_peer.wire(b);
    Ok((account, provisioning, billing))
}

/// The three services called in process, each call with `deadline`.
fn in_process(
    account: &AccountServer,
    provisioning: &ProvisioningServer,
    billing: &BillingServer,
    deadline: Duration,
) -> (
    Arc<dyn AccountApi>,
    Arc<dyn ProvisioningApi>,
    Arc<dyn BillingApi>,
) {
    use marketbridge_account::grpc::AccountGrpc;
    use marketbridge_billing::grpc::BillingGrpc;
    use marketbridge_provisioning::grpc::ProvisioningGrpc;
    (
        Arc::new(
            InProcess::new(AccountGrpc::new(account.domain().clone())).with_deadline(deadline),
        ),
        Arc::new(
            InProcess::new(ProvisioningGrpc::new(provisioning.domain().clone()))
                .with_deadline(deadline),
        ),
        Arc::new(
            InProcess::new(BillingGrpc::new(billing.domain().clone())).with_deadline(deadline),
        ),
    )
}
