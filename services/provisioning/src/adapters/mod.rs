//! The marketplace adapters and drivers provisioning runs with, chosen from
//! configuration.

pub mod aws;
pub mod azure;
pub mod google;
pub mod vercel;

use crate::driver::Drivers;
use crate::driver::plugin::PluginDriver;
use crate::driver::postgres::PostgresDriver;
use crate::marketplace::Marketplaces;
use marketbridge_catalog::Catalog;
use marketbridge_config::Config;
use marketbridge_core::time::SharedClock;
use marketbridge_core::{Marketplace, Result};
use marketbridge_proto::account::v1::account_service_client::AccountServiceClient;
use marketbridge_rpc::AccountApi;
use std::sync::Arc;
use std::time::Duration;

/// Registers an adapter for every configured marketplace.
pub fn from_config(config: &Config, clock: SharedClock) -> Result<Marketplaces> {
    let mut marketplaces = Marketplaces::default();
    if !config.vercel.client_id.is_empty() {
        let http = marketbridge_rpc::http::outbound_client(&config.tls, Duration::from_secs(10))?;
        let api = marketbridge_vercel::VercelApi::new(http, &config.vercel.api_base_url);
        let accounts: Arc<dyn AccountApi> =
            Arc::new(AccountServiceClient::new(marketbridge_rpc::channel(
                &config.gateway.account_url,
                &marketbridge_rpc::ClientCredentials::of_set(config),
                Duration::from_millis(config.gateway.request_timeout_ms.max(1000) * 3),
            )?));
        marketplaces = marketplaces.with_adapter(
            Marketplace::Vercel,
            Arc::new(vercel::VercelProvisioning::new(api, accounts)),
        );
    }
    if let Some(client) =
        marketbridge_aws::MarketplaceClient::from_options(&config.aws, &config.tls)?
    {
        let catalog = Arc::new(Catalog::load(&config.catalog.path)?);
        marketplaces = marketplaces.with_adapter(
            Marketplace::Aws,
            Arc::new(aws::AwsLicenses::new(client, catalog, clock.clone())),
        );
        // Subscription products have no entitlements to re-read.
        if config.aws.product_type.has_entitlements() {
            marketplaces = marketplaces.with_reconciliation(
                Marketplace::Aws,
                Duration::from_secs(config.aws.reconcile_interval_seconds.max(1)),
            );
        }
    }
    if let Some(clients) = marketbridge_azure::AzureClients::from_config(config, clock.clone())? {
        let catalog = Arc::new(Catalog::load(&config.catalog.path)?);
        marketplaces = marketplaces
            .with_adapter(
                Marketplace::Azure,
                Arc::new(azure::AzureSubscriptions::new(
                    clients.fulfillment().clone(),
                    catalog,
                )),
            )
            .with_reconciliation(
                Marketplace::Azure,
                Duration::from_secs(config.azure.reconcile_interval_seconds.max(60)),
            );
    }
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
