//! The marketplace adapters and drivers provisioning runs with, chosen from
//! configuration.

pub mod google;

use crate::driver::Drivers;
use crate::driver::plugin::PluginDriver;
use crate::driver::postgres::PostgresDriver;
use crate::marketplace::Marketplaces;
use marketbridge_catalog::Catalog;
use marketbridge_config::Config;
use marketbridge_core::time::SharedClock;
use marketbridge_core::{Marketplace, Result};
use std::sync::Arc;
use std::time::Duration;

/// Registers an adapter for every configured marketplace.
pub fn from_config(config: &Config, clock: SharedClock) -> Result<Marketplaces> {
    let mut marketplaces = Marketplaces::default();
    if let Some(clients) = marketbridge_google::GoogleClients::from_config(config, clock)? {
        let catalog = Arc::new(Catalog::load(&config.catalog.path)?);
        marketplaces = marketplaces
            .with_adapter(
                Marketplace::Google,
                Arc::new(google::GoogleEntitlements::new(
                    clients.procurement().clone(),
                    catalog,
                )),
            )
            .with_reconciliation(
                Marketplace::Google,
                Duration::from_secs(config.google.reconcile_interval_seconds.max(1)),
            );
    }
    Ok(marketplaces)
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
