//! The Azure clients a service needs, built from configuration: one
//! outbound HTTP client, one token source, the Fulfillment and metering
//! clients over them.

use crate::api::AzureApi;
use crate::fulfillment::FulfillmentClient;
use crate::metering::MeteringClient;
use crate::token::{AccessTokens, EmulatorTokens, EntraTokens};
use crate::webhook::WebhookVerifier;
use marketbridge_config::Config;
use marketbridge_core::crypto::SecretString;
use marketbridge_core::time::SharedClock;
use marketbridge_core::{Error, Result};
use marketbridge_rpc::jwks::KeySetOptions;
use std::sync::Arc;
use std::time::Duration;

/// Time limit of one call to Microsoft.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Clients of the Marketplace APIs, sharing one token source.
#[derive(Clone, Debug)]
pub struct AzureClients {
    fulfillment: FulfillmentClient,
    metering: MeteringClient,
}

/// The client secret: the setting, else the file.
fn client_secret(config: &Config) -> Result<SecretString> {
    let azure = &config.azure;
    if !azure.client_secret.trim().is_empty() {
        return Ok(SecretString::new(azure.client_secret.trim()));
    }
    if azure.client_secret_file.trim().is_empty() {
        return Err(Error::validation(
            "azure.client_id is set but neither azure.client_secret nor azure.client_secret_file is",
        ));
    }
    let text = std::fs::read_to_string(azure.client_secret_file.trim())
        .map_err(|e| Error::validation(format!("cannot read azure.client_secret_file: {e}")))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(Error::validation("azure.client_secret_file is empty"));
    }
    Ok(SecretString::new(secret))
}

impl AzureClients {
    /// Clients as configured; `Ok(None)` when Azure is off
    /// (`azure.client_id` is empty).
    pub fn from_config(config: &Config, clock: SharedClock) -> Result<Option<Self>> {
        let azure = &config.azure;
        if !azure.enabled() {
            return Ok(None);
        }
        if azure.tenant_id.trim().is_empty() {
            return Err(Error::validation(
                "azure.client_id is set but azure.tenant_id is empty",
            ));
        }
        let http = marketbridge_rpc::http::outbound_client(&config.tls, CALL_TIMEOUT)?;
        let tokens: Arc<dyn AccessTokens> = if azure.emulator_access_token {
            tracing::warn!(
                "azure.emulator_access_token is on: calls carry an unsigned token (Microsoft's emulator only)"
            );
            Arc::new(EmulatorTokens::new(
                azure.tenant_id.trim(),
                azure.client_id.trim(),
                azure.resource.trim(),
                clock,
            ))
        } else {
            Arc::new(EntraTokens::new(
                http.clone(),
                &azure.token_endpoint(),
                azure.client_id.trim(),
                client_secret(config)?,
                azure.resource.trim(),
                clock,
            ))
        };
        Ok(Some(Self {
            fulfillment: FulfillmentClient::new(AzureApi::new(
                http.clone(),
                &azure.fulfillment_base_url,
                tokens.clone(),
            )),
            metering: MeteringClient::new(AzureApi::new(http, &azure.metering_base_url, tokens)),
        }))
    }

    /// The Fulfillment API.
    pub fn fulfillment(&self) -> &FulfillmentClient {
        &self.fulfillment
    }

    /// The metering API.
    pub fn metering(&self) -> &MeteringClient {
        &self.metering
    }
}

/// The webhook verifier as configured; `Ok(None)` when Azure is off.
pub fn webhook_verifier(config: &Config, clock: SharedClock) -> Result<Option<WebhookVerifier>> {
    let azure = &config.azure;
    if !azure.enabled() {
        return Ok(None);
    }
    if azure.insecure_accept_unsigned_webhooks {
        tracing::warn!(
            "azure.insecure_accept_unsigned_webhooks is on: webhook calls without a token are accepted (Microsoft's emulator only)"
        );
    }
    let http = marketbridge_rpc::http::outbound_client(&config.tls, Duration::from_secs(10))?;
    Ok(Some(
        WebhookVerifier::new(
            http,
            &azure.openid_configuration(),
            KeySetOptions::from_config(&config.gateway),
            azure.client_id.trim(),
            azure.tenant_id.trim(),
            azure.webhook_app_id.trim(),
            azure.webhook_clock_skew_seconds,
            clock,
        )
        .accepting_unsigned(azure.insecure_accept_unsigned_webhooks),
    ))
}
