//! The marketplace adapters and event processors the account service runs
//! with, chosen from configuration.

pub mod aws;
pub mod azure;
pub mod google;
pub mod vercel;

use crate::marketplace::Marketplaces;
use marketbridge_config::Config;
use marketbridge_core::time::SharedClock;
use marketbridge_core::{Marketplace, Result};
use std::sync::Arc;
use std::time::Duration;

/// Registers an adapter and a processor for every configured marketplace.
pub fn from_config(config: &Config, clock: SharedClock) -> Result<Marketplaces> {
    let mut marketplaces = Marketplaces::default();
    if !config.vercel.client_id.is_empty() {
        let http = marketbridge_rpc::http::outbound_client(&config.tls, Duration::from_secs(10))?;
        let api = marketbridge_vercel::VercelApi::new(http, &config.vercel.api_base_url);
        let credentials = vercel::VercelCredentials::from_config(&config.vercel, clock.clone())?;
        marketplaces = marketplaces
            .with_adapter(
                Marketplace::Vercel,
                Arc::new(vercel::VercelAccounts::new(api, credentials)),
            )
            .with_processor(Marketplace::Vercel, Arc::new(vercel::VercelEvents));
        if config.vercel.credential_rotation_days > 0 {
            marketplaces = marketplaces.with_worker(Arc::new(vercel::VercelRotationSchedule::new(
                config.vercel.credential_rotation_days,
            )));
        }
    }
    let marketplaces = aws::register(marketplaces, config, clock.clone())?;
    let marketplaces = azure::register(marketplaces, config, clock.clone())?;
    google::register(marketplaces, config, clock)
}
