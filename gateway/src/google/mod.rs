//! The Google Cloud Marketplace adapter: Pub/Sub push notifications and the
//! signup page.

use crate::state::AppState;
use axum::Router;
use marketbridge_config::Config;
use marketbridge_core::Result;

/// The Google adapter's state.
#[derive(Clone, Default)]
pub struct GoogleState {}

impl GoogleState {
    /// State from configuration.
    pub fn new(_config: &Config) -> Result<Self> {
        Ok(Self {})
    }
}

/// The Google routes.
pub fn routes(_state: &AppState) -> Router<AppState> {
    Router::new()
}
