//! What the Google adapter keeps for its handlers: the token verifiers, the
//! configured paths and the agent cards. It names no
//! handler, so the gateway's shared state can hold it.

use marketbridge_catalog::Catalog;
use marketbridge_config::Config;
use marketbridge_core::time::SharedClock;
use marketbridge_core::{Error, Result};
use marketbridge_google::jwks::{KeySet, KeySetOptions};
use marketbridge_google::push_auth::PushTokenVerifier;
use marketbridge_google::signup_token::SignupTokenVerifier;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The Google adapter's state: token verifiers and paths.
#[derive(Clone, Default)]
pub struct GoogleState {
    inner: Option<Arc<GoogleAdapter>>,
}

pub(crate) struct GoogleAdapter {
    pub(crate) push: Option<PushTokenVerifier>,
    pub(crate) signup: Option<SignupTokenVerifier>,
    pub(crate) push_path: String,
    pub(crate) signup_path: String,
    pub(crate) agents: AgentCards,
    pub(crate) agents_path: String,
}

fn route_path(path: &str) -> String {
    let trimmed = path.trim().trim_end_matches('/');
    if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    }
}

impl GoogleState {
    /// State from configuration, with the system clock.
    pub fn new(config: &Config) -> Result<Self> {
        Self::with_clock(config, marketbridge_core::time::system_clock())
    }

    /// State from configuration; token lifetimes are checked with `clock`.
    /// Nothing is served when `google.provider_id` is empty; the push
    /// endpoint needs the push audience and service account, the signup
    /// page the signup audience.
    pub fn with_clock(config: &Config, clock: SharedClock) -> Result<Self> {
        let google = &config.google;
        if google.provider_id.trim().is_empty() {
            return Ok(Self::default());
        }
        let http = marketbridge_rpc::http::outbound_client(&config.tls, Duration::from_secs(10))?;
        let key_options = KeySetOptions::from_config(&config.gateway);
        let push = (!google.pubsub_push_audience.trim().is_empty()
            && !google.pubsub_push_service_account.trim().is_empty())
        .then(|| {
            PushTokenVerifier::new(
                KeySet::new(http.clone(), &google.oidc_jwks_url)
                    .named(marketbridge_google::jwks::PUSH_KEY_SET)
                    .with_options(key_options),
                &google.oidc_issuers,
                &google.pubsub_push_audience,
                &google.pubsub_push_service_account,
                clock.clone(),
            )
        });
        let signup = (!google.signup_audience.trim().is_empty()).then(|| {
            SignupTokenVerifier::new(
                KeySet::new(http.clone(), &google.signup_jwks_url)
                    .named(marketbridge_google::jwks::SIGNUP_KEY_SET)
                    .with_options(key_options),
                &google.signup_issuer,
                &google.signup_audience,
                clock.clone(),
            )
        });
        Ok(Self {
            inner: Some(Arc::new(GoogleAdapter {
                push,
                signup,
                push_path: route_path(&google.push_path),
                signup_path: route_path(&google.signup_path),
                agents: AgentCards::from_catalog(&marketbridge_catalog::Catalog::load(
                    &config.catalog.path,
                )?)?,
                agents_path: route_path(&google.agents_path),
            })),
        })
    }

    pub(crate) fn adapter(&self) -> Option<&GoogleAdapter> {
        self.inner.as_deref()
    }
}

/// Every agent product's card, as the JSON text served.
#[derive(Debug, Clone, Default)]
pub struct AgentCards {
    cards: Arc<BTreeMap<String, String>>,
}

impl AgentCards {
    /// The cards of the catalog's agent products (checked by the catalog).
    pub fn from_catalog(catalog: &Catalog) -> Result<Self> {
        let mut cards = BTreeMap::new();
        for product in catalog.products() {
            if let Some(card) = product.agent_card() {
                let text = serde_json::to_string_pretty(&card).map_err(|e| {
                    Error::validation(format!(
                        "catalog: product `{}`: agent card: {e}",
                        product.id
                    ))
                })?;
                cards.insert(product.id.clone(), text);
            }
        }
        Ok(Self {
            cards: Arc::new(cards),
        })
    }

    /// True when no product is an agent.
    pub fn is_empty(&self) -> bool {
        self.cards.is_empty()
    }

    pub(crate) fn card(&self, product: &str) -> Option<&str> {
        self.cards.get(product).map(String::as_str)
    }
}
