//! The marketplace adapters billing runs with, chosen from configuration.

pub mod aws;
pub mod azure;
pub mod google;
pub mod vercel;
pub mod vercel_reports;

use crate::marketplace::Marketplaces;
use marketbridge_config::Config;
use marketbridge_core::time::SharedClock;
use marketbridge_core::{Marketplace, Result};
use marketbridge_proto::account::v1::account_service_client::AccountServiceClient;
use marketbridge_rpc::AccountApi;
use std::sync::Arc;
use std::time::Duration;

/// Registers an adapter and a reporter for every configured marketplace.
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
        marketplaces = marketplaces
            .with_adapter(
                Marketplace::Vercel,
                Arc::new(vercel::VercelBilling::new(api.clone(), accounts.clone())),
            )
            .with_reporter(
                Marketplace::Vercel,
                Arc::new(vercel_reports::VercelReporter::new(api).with_tokens(
                    marketbridge_vercel::api::credentials::AccountTokens::new(accounts),
                )),
            );
    }
    if let Some(client) =
        marketbridge_aws::MarketplaceClient::from_options(&config.aws, &config.tls)?
    {
        marketplaces = marketplaces.with_reporter(
            Marketplace::Aws,
            Arc::new(aws::AwsReporter::new(
                client,
                clock.clone(),
                config.aws.metering_window_hours,
                config.aws.month_end_grace,
            )),
        );
    }
    if let Some(clients) = marketbridge_azure::AzureClients::from_config(config, clock.clone())? {
        marketplaces = marketplaces.with_reporter(
            Marketplace::Azure,
            Arc::new(azure::AzureReporter::new(
                clients.metering().clone(),
                clients.fulfillment().clone(),
            )),
        );
    }
    if let Some(clients) = marketbridge_google::GoogleClients::from_config(config, clock)? {
        match clients.service_control() {
            Some(service_control) => {
                marketplaces = marketplaces.with_reporter(
                    Marketplace::Google,
                    Arc::new(
                        google::GoogleReporter::new(service_control.clone())
                            .with_grace_days(config.google.report_grace_days),
                    ),
                );
            }
            None => tracing::warn!(
                "google.service_name is empty: usage is not reported to Google Cloud Marketplace"
            ),
        }
    }
    Ok(marketplaces)
}
