//! The Google Cloud Marketplace adapter: Pub/Sub push notifications and the
//! signup page.
//!
//! - `POST {google.push_path}`: a Pub/Sub push delivery. The OIDC bearer
//!   token is verified, the envelope and its base64 `data` decoded, and the
//!   notification recorded with the account service before the 2xx that
//!   acknowledges it. Forged or malformed deliveries get a 4xx.
//! - `POST {google.signup_path}`: Google's browser POST with
//!   `x-gcp-marketplace-token`. The token is verified and a signup form is
//!   shown; the form carries a ticket we sign ourselves, never the token.
//! - `GET {google.signup_path}?x-gcp-marketplace-token=…`: the same token in
//!   the query string; once verified, a 303 to `{google.signup_path}?ticket=…`
//!   (our ticket only), which shows the form.
//! - `GET {google.agents_path}/{product}/agent-card.json`: the A2A Agent
//!   Card of a product the catalog lists as an AI agent.
//! - `POST {google.signup_path}/complete`: the submitted form; the account
//!   service records the signup and approves the account with Google.

mod agent;
mod pages;
mod push;
mod signup;
pub mod ticket;

use crate::openapi::relocated;
use crate::state::AppState;
use marketbridge_config::Config;
use marketbridge_core::Result;
use marketbridge_core::time::SharedClock;
use marketbridge_google::jwks::{KeySet, KeySetOptions};
use marketbridge_google::push_auth::PushTokenVerifier;
use marketbridge_google::signup_token::SignupTokenVerifier;
use std::sync::Arc;
use std::time::Duration;
use ticket::TicketSigner;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The Google adapter's state: token verifiers and the ticket signer.
#[derive(Clone, Default)]
pub struct GoogleState {
    inner: Option<Arc<GoogleAdapter>>,
}

struct GoogleAdapter {
    push: Option<PushTokenVerifier>,
    signup: Option<SignupTokenVerifier>,
    tickets: TicketSigner,
    clock: SharedClock,
    push_path: String,
    signup_path: String,
    agents: agent::AgentCards,
    agents_path: String,
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
                tickets: TicketSigner::from_config(config),
                clock,
                push_path: route_path(&google.push_path),
                signup_path: route_path(&google.signup_path),
                agents: agent::AgentCards::from_catalog(&marketbridge_catalog::Catalog::load(
                    &config.catalog.path,
                )?)?,
                agents_path: route_path(&google.agents_path),
            })),
        })
    }

    fn adapter(&self) -> Option<&GoogleAdapter> {
        self.inner.as_deref()
    }
}

/// The Google routes (none when Google is not configured), at the
/// configured paths.
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let Some(adapter) = state.google.adapter() else {
        return OpenApiRouter::new();
    };
    let mut router = OpenApiRouter::new();
    if adapter.push.is_some() {
        router = router.routes(relocated(&adapter.push_path, routes!(push::receive)));
    }
    if !adapter.agents.is_empty() {
        router = router.routes(relocated(
            &format!("{}/{{product}}/{}", adapter.agents_path, agent::CARD_FILE),
            routes!(agent::card),
        ));
    }
    if adapter.signup.is_some() {
        router = router
            .routes(relocated(
                &adapter.signup_path,
                routes!(signup::start, signup::visit),
            ))
            .routes(relocated(
                &format!("{}/complete", adapter.signup_path),
                routes!(signup::complete),
            ));
    }
    router
}
