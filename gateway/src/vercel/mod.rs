//! The Vercel Marketplace adapter: the partner API Vercel calls, webhooks,
//! SSO, and the seed's flow API.

use crate::state::AppState;
use axum::Router;
use marketbridge_config::Config;
use marketbridge_core::Result;

/// The Vercel adapter's state.
#[derive(Clone, Default)]
pub struct VercelState {}

impl VercelState {
    /// State from configuration.
    pub fn new(_config: &Config) -> Result<Self> {
        Ok(Self {})
    }
}

/// The Vercel routes.
pub fn routes(_state: &AppState) -> Router<AppState> {
    Router::new()
}
