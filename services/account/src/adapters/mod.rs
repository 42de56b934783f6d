//! The marketplace adapters and event processors the account service runs
//! with, chosen from configuration.

pub mod google;

use crate::marketplace::Marketplaces;
use marketbridge_config::Config;
use marketbridge_core::Result;
use marketbridge_core::time::SharedClock;

/// Registers an adapter and a processor for every configured marketplace.
pub fn from_config(config: &Config, clock: SharedClock) -> Result<Marketplaces> {
    let marketplaces = Marketplaces::default();
    let marketplaces = google::register(marketplaces, config, clock)?;
    Ok(marketplaces)
}
