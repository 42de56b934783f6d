//! What every handler can reach: the service clients and the configuration,
//! plus each marketplace adapter's own verifiers.

use marketbridge_config::Config;
use marketbridge_core::Result;
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
}

impl AppState {
    /// State over the clients.
    pub fn new(config: Arc<Config>, clients: ServiceClients) -> Result<Self> {
        Ok(Self {
            vercel: crate::vercel::VercelState::new(&config)?,
            google: crate::google::GoogleState::new(&config)?,
            clients,
            config,
        })
    }
}
