//! What the Azure adapter keeps for its handlers: the webhook token
//! verifier and the configured paths. It names no handler, so the gateway's
//! shared state can hold it.

use marketbridge_azure::webhook::WebhookVerifier;
use marketbridge_config::Config;
use marketbridge_core::Result;
use marketbridge_core::time::SharedClock;
use std::sync::Arc;

/// The Azure adapter's state (empty when Azure is not configured).
#[derive(Clone, Default)]
pub struct AzureState {
    inner: Option<Arc<AzureAdapter>>,
}

pub(crate) struct AzureAdapter {
    pub(crate) verifier: WebhookVerifier,
    pub(crate) landing_path: String,
    pub(crate) webhook_path: String,
}

fn route_path(path: &str) -> String {
    let trimmed = path.trim().trim_end_matches('/');
    if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    }
}

impl AzureState {
    /// State from configuration; token lifetimes are checked with `clock`.
    /// Nothing is served when `azure.client_id` is empty.
    pub fn with_clock(config: &Config, clock: SharedClock) -> Result<Self> {
        let Some(verifier) = marketbridge_azure::clients::webhook_verifier(config, clock)? else {
            return Ok(Self::default());
        };
        Ok(Self {
            inner: Some(Arc::new(AzureAdapter {
                verifier,
                landing_path: route_path(&config.azure.landing_path),
                webhook_path: route_path(&config.azure.webhook_path),
            })),
        })
    }

    pub(crate) fn adapter(&self) -> Option<&AzureAdapter> {
        self.inner.as_deref()
    }
}
