//! The marketplace adapters and drivers provisioning runs with, chosen from
//! configuration.

use crate::driver::Drivers;
use crate::marketplace::Marketplaces;
use marketbridge_config::Config;
use marketbridge_core::Result;

/// Registers an adapter for every configured marketplace.
pub fn from_config(_config: &Config) -> Result<Marketplaces> {
    Ok(Marketplaces::default())
}

/// The drivers the catalog may name.
pub fn drivers(_config: &Config) -> Result<Drivers> {
    Ok(Drivers::builtin())
}
