//! What every handler can reach: the services (as their traits), the
//! configuration, plus each marketplace adapter's own verifiers.

use crate::console::session::ConsoleKeys;
use crate::google::state::GoogleState;
use crate::signup::ticket::SignupTickets;
use crate::vercel::state::VercelState;
use marketbridge_config::Config;
use marketbridge_core::Result;
use marketbridge_core::time::SharedClock;
use marketbridge_rpc::{AccountApi, BillingApi, ProvisioningApi, ServiceClients};
use std::sync::Arc;

/// The services as the gateway calls them.
#[derive(Clone)]
pub struct Services {
    /// The account service.
    pub accounts: Arc<dyn AccountApi>,
    /// The provisioning service.
    pub provisioning: Arc<dyn ProvisioningApi>,
    /// The billing service.
    pub billing: Arc<dyn BillingApi>,
}

impl Services {
    /// The services over the gRPC `clients`.
    pub fn over_grpc(clients: &ServiceClients) -> Self {
        Self {
            accounts: Arc::new(clients.account.clone()),
            provisioning: Arc::new(clients.provisioning.clone()),
            billing: Arc::new(clients.billing.clone()),
        }
    }
}

/// Shared handler state: one pointer, so handing it to each request (axum
/// clones the state for every call) costs one reference count, not a copy
/// of every adapter's clients and keys.
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// What [`AppState`] points to.
pub struct SharedState {
    /// The account service.
    pub accounts: Arc<dyn AccountApi>,
    /// The provisioning service.
    pub provisioning: Arc<dyn ProvisioningApi>,
    /// The billing service.
    pub billing: Arc<dyn BillingApi>,
    /// The gRPC clients the services above are called through, for what
    /// needs the wire itself: the operator console (which calls with the
    /// operator's own token) and the health checks.
    pub clients: ServiceClients,
    /// The configuration.
    pub config: Arc<Config>,
    /// The Vercel adapter's state.
    pub vercel: VercelState,
    /// The Google adapter's state.
    pub google: GoogleState,
    /// The AWS adapter's state.
    pub aws: crate::aws::state::AwsState,
    /// The Azure adapter's state.
    pub azure: crate::azure::state::AzureState,
    /// The shared signup page's ticket signer.
    pub signup: SignupTickets,
    /// The operator console's session keys.
    pub console: ConsoleKeys,
}

impl AppState {
    /// State over the clients, with the system clock.
    pub fn new(config: Arc<Config>, clients: ServiceClients) -> Result<Self> {
        Self::with_clock(config, clients, marketbridge_core::time::system_clock())
    }

    /// State over the clients; token lifetimes are checked with `clock`.
    pub fn with_clock(
        config: Arc<Config>,
        clients: ServiceClients,
        clock: SharedClock,
    ) -> Result<Self> {
        let services = Services::over_grpc(&clients);
        Self::with_services(config, clients, services, clock)
    }

    /// State calling the services through `services` (in process under
    /// `marketbridge up`), with `clients` for what needs the wire.
    pub fn with_services(
        config: Arc<Config>,
        clients: ServiceClients,
        services: Services,
        clock: SharedClock,
    ) -> Result<Self> {
        Ok(Self(Arc::new(SharedState {
            vercel: VercelState::with_clock(&config, clock.clone())?,
            google: GoogleState::with_clock(&config, clock.clone())?,
            aws: crate::aws::state::AwsState::new(&config)?,
            azure: crate::azure::state::AzureState::with_clock(&config, clock.clone())?,
            signup: SignupTickets::new(&config, clock),
            console: ConsoleKeys::from_config(&config),
            accounts: services.accounts,
            provisioning: services.provisioning,
            billing: services.billing,
            clients,
            config,
        })))
    }
}
