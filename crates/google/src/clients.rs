//! The Google clients a service needs, built from configuration: one
//! outbound HTTP client, access tokens from the service-account key, and the
//! Procurement, Pub/Sub and Service Control clients over them.

use crate::api::{AccessTokens, GoogleApi};
use crate::procurement::ProcurementClient;
use crate::pubsub::PubsubClient;
use crate::service_account::{ServiceAccountKey, ServiceAccountTokens};
use crate::service_control::ServiceControlClient;
use marketbridge_config::Config;
use marketbridge_core::time::SharedClock;
use marketbridge_core::{Error, Result};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Time limit of one call to Google.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Clients of the Google APIs, sharing one token source.
#[derive(Clone)]
pub struct GoogleClients {
    http: reqwest::Client,
    tokens: Arc<dyn AccessTokens>,
    procurement: ProcurementClient,
    pubsub: Option<PubsubClient>,
    service_control: Option<ServiceControlClient>,
}

impl std::fmt::Debug for GoogleClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleClients")
            .field("procurement", &self.procurement)
            .finish_non_exhaustive()
    }
}

impl GoogleClients {
    /// Clients as configured; `Ok(None)` when Google is not configured
    /// (`google.provider_id` is empty).
    pub fn from_config(config: &Config, clock: SharedClock) -> Result<Option<Self>> {
        let google = &config.google;
        if google.provider_id.trim().is_empty() {
            return Ok(None);
        }
        if google.service_account_key_file.trim().is_empty() {
            return Err(Error::validation(
                "google.provider_id is set but google.service_account_key_file is empty",
            ));
        }
        let http = marketbridge_rpc::http::outbound_client(&config.tls, CALL_TIMEOUT)?;
        let key = ServiceAccountKey::from_file(Path::new(google.service_account_key_file.trim()))?;
        let tokens: Arc<dyn AccessTokens> = Arc::new(ServiceAccountTokens::new(
            http.clone(),
            key,
            &google.oauth_token_url,
            clock,
        )?);
        Self::with_tokens(config, http, tokens).map(Some)
    }

    /// Clients over a given token source.
    pub fn with_tokens(
        config: &Config,
        http: reqwest::Client,
        tokens: Arc<dyn AccessTokens>,
    ) -> Result<Self> {
        let google = &config.google;
        let procurement = ProcurementClient::new(
            GoogleApi::new(http.clone(), &google.procurement_base_url, tokens.clone()),
            &google.provider_id,
        )?;
        let pubsub = if google.pull_subscription.trim().is_empty() {
            None
        } else {
            Some(PubsubClient::new(
                GoogleApi::new(http.clone(), &google.pubsub_base_url, tokens.clone()),
                &google.pull_subscription,
            )?)
        };
        let service_control = if google.service_name.trim().is_empty() {
            None
        } else {
            Some(ServiceControlClient::new(
                GoogleApi::new(
                    http.clone(),
                    &google.service_control_base_url,
                    tokens.clone(),
                ),
                &google.service_name,
            )?)
        };
        Ok(Self {
            http,
            tokens,
            procurement,
            pubsub,
            service_control,
        })
    }

    /// The outbound HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The token source.
    pub fn tokens(&self) -> &Arc<dyn AccessTokens> {
        &self.tokens
    }

    /// The Procurement API.
    pub fn procurement(&self) -> &ProcurementClient {
        &self.procurement
    }

    /// The pull subscription, when one is configured.
    pub fn pubsub(&self) -> Option<&PubsubClient> {
        self.pubsub.as_ref()
    }

    /// Service Control, when a service name is configured.
    pub fn service_control(&self) -> Option<&ServiceControlClient> {
        self.service_control.as_ref()
    }
}
