//! What every handler can reach: the service clients and the configuration,
//! plus each marketplace adapter's own verifiers.

use marketbridge_config::Config;
use marketbridge_core::Result;
use marketbridge_core::time::SharedClock;
use marketbridge_rpc::ServiceClients;
use std::sync::Arc;

/// Shared handler state. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The services.
    pub clients: ServiceClients,
    /// The configuration.
    pub config: Arc<Config>,
    /// The Vercel adapter's state.
    pub vercel: crate::vercel::VercelState,
    /// The Google adapter's state.
    pub google: crate::google::GoogleState,
    /// The operator console's session keys.
    pub console: crate::console::ConsoleKeys,
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
        Ok(Self {
            vercel: crate::vercel::VercelState::new(&config)?,
            google: crate::google::GoogleState::with_clock(&config, clock)?,
            console: crate::console::ConsoleKeys::from_config(&config),
            clients,
            config,
        })
    }
}
