//! The Vercel Marketplace adapter: the partner API Vercel calls (under
//! `vercel.base_path`), webhooks, SSO with a small provider page, and the
//! simplified `/marketplace/...` flow. Every call is verified here and
//! carried out by the services over gRPC.
//!
//! | route (below the base path) | file |
//! |---|---|
//! | `/v1/installations/{id}` PUT, GET, PATCH, DELETE | [`installations`] |
//! | `/v1/products/{slug}/plans`, `.../plans` | [`plans`] |
//! | `/v1/installations/{id}/resources...` | [`resources`] |
//! | `/v1/installations/{id}/resources/{rid}/repl` | [`resources`] |
//! | `/v1/installations/{id}/resource-transfer-requests...` | [`transfers`] |
//! | `/v1/installations/{id}/billing/provision` | [`billing`] |
//! | `/webhook` | [`webhook`] |
//! | `/sso`, `/dashboard/...` | [`sso`], [`dashboard`] |
//! | `/marketplace/...` | [`flow`] |

pub mod auth;
pub mod billing;
pub mod body;
pub mod convert;
pub mod dashboard;
pub mod error;
pub mod flow;
pub mod installations;
pub mod plans;
pub mod resources;
pub mod services;
pub mod session;
pub mod sso;
pub mod transfers;
pub mod webhook;

use crate::state::AppState;
use axum::Router;
use axum::routing::{get, post, put};
use marketbridge_config::Config;
use marketbridge_core::Result;
use marketbridge_vercel::{OidcVerifier, VercelApi};
use std::sync::Arc;
use std::time::Duration;

/// The Vercel adapter's state: the token verifier (with its key cache), the
/// Vercel API client for SSO, and the session key.
#[derive(Clone)]
pub struct VercelState {
    /// Verifies Vercel's tokens.
    pub verifier: Arc<OidcVerifier>,
    /// `nbf`, `iat` and lifetime rules of Vercel's tokens.
    pub token_rules: marketbridge_vercel::oidc::TimeRules,
    /// The Vercel API (SSO code exchange).
    pub api: VercelApi,
    /// Signs provider-page sessions.
    pub sessions: session::SessionKey,
    /// The integration client id.
    pub client_id: String,
    /// The integration client secret.
    pub client_secret: marketbridge_core::crypto::SecretString,
    /// Path prefix of every route (no trailing slash).
    pub base_path: String,
    /// Where browsers reach the gateway.
    pub public_url: String,
    /// The installation-level plan new installations get, if any.
    pub default_installation_plan: String,
    /// Where a browser without a session starts Vercel's sign-in for an
    /// installation (`{dashboard}/sso/integrations/{slug}`), when the
    /// integration's slug is configured.
    pub sso_start: Option<String>,
}

impl VercelState {
    /// State from configuration.
    pub fn new(config: &Config) -> Result<Self> {
        let http = marketbridge_rpc::http::outbound_client(&config.tls, Duration::from_secs(10))?;
        let vercel = &config.vercel;
        let verifier = OidcVerifier::new(
            http.clone(),
            &vercel.jwks_url,
            &vercel.oidc_issuer,
            &vercel.client_id,
        )
        .with_key_options(marketbridge_rpc::jwks::KeySetOptions::from_config(
            &config.gateway,
        ));
        Ok(Self {
            verifier: Arc::new(verifier),
            token_rules: marketbridge_vercel::oidc::TimeRules::with_max_lifetime(
                vercel.token_max_lifetime_seconds,
            ),
            api: VercelApi::new(http, &vercel.api_base_url),
            sessions: session::SessionKey::from_config(config),
            client_id: vercel.client_id.clone(),
            client_secret: marketbridge_core::crypto::SecretString::new(
                vercel.client_secret.clone(),
            ),
            base_path: base_path(&vercel.base_path),
            public_url: config.gateway.public_url.trim_end_matches('/').to_owned(),
            default_installation_plan: vercel.default_installation_plan.trim().to_owned(),
            sso_start: match vercel.integration_slug.trim() {
                "" => None,
                slug => Some(format!(
                    "{}/sso/integrations/{slug}",
                    vercel.dashboard_url.trim().trim_end_matches('/')
                )),
            },
        })
    }

    /// True when sessions must only travel over HTTPS.
    pub fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}

/// `vercel.base_path` normalised: a leading slash, no trailing slash, empty
/// for the root.
pub fn base_path(configured: &str) -> String {
    let trimmed = configured.trim().trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    }
}

/// The Vercel routes.
pub fn routes(state: &AppState) -> Router<AppState> {
    let base = &state.vercel.base_path;
    let at = |path: &str| format!("{base}{path}");
    Router::new()
        .route(
            &at("/v1/installations/{installation_id}"),
            put(installations::upsert)
                .get(installations::get)
                .patch(installations::update)
                .delete(installations::delete),
        )
        .route(
            &at("/v1/products/{product_slug}/plans"),
            get(plans::product_plans),
        )
        .route(
            &at("/v1/installations/{installation_id}/plans"),
            get(plans::installation_plans),
        )
        .route(
            &at("/v1/installations/{installation_id}/resources"),
            post(resources::provision).get(resources::list),
        )
        .route(
            &at("/v1/installations/{installation_id}/resources/{resource_id}"),
            get(resources::get)
                .patch(resources::update)
                .delete(resources::delete),
        )
        .route(
            &at("/v1/installations/{installation_id}/resources/{resource_id}/plans"),
            get(plans::resource_plans),
        )
        .route(
            &at("/v1/installations/{installation_id}/resources/{resource_id}/secrets/rotate"),
            post(resources::rotate_secrets),
        )
        .route(
            &at("/v1/installations/{installation_id}/resources/{resource_id}/repl"),
            post(resources::repl),
        )
        .route(
            &at("/v1/installations/{installation_id}/resource-transfer-requests"),
            post(transfers::create),
        )
        .route(
            &at("/v1/installations/{installation_id}/resource-transfer-requests/{claim_id}"),
            put(transfers::create_with_id),
        )
        .route(
            &at("/v1/installations/{installation_id}/resource-transfer-requests/{claim_id}/verify"),
            get(transfers::verify).post(transfers::verify),
        )
        .route(
            &at("/v1/installations/{installation_id}/resource-transfer-requests/{claim_id}/accept"),
            post(transfers::accept),
        )
        .route(
            &at("/v1/installations/{installation_id}/billing/provision"),
            post(billing::provision_purchase),
        )
        .route(&at("/webhook"), post(webhook::receive))
        .route(&at("/sso"), get(sso::redirect_login))
        .route(
            &at("/dashboard/{installation_id}"),
            get(dashboard::installation_page),
        )
        .route(
            &at("/dashboard/{installation_id}/resources/{resource_id}"),
            get(dashboard::resource_page),
        )
        .route(
            &at("/dashboard/{installation_id}/invoices/{invoice_id}"),
            get(dashboard::invoice_page),
        )
        .route(
            &at("/marketplace/account"),
            post(flow::account).put(flow::account),
        )
        .route(&at("/marketplace/plans"), get(flow::plans))
        .route(&at("/marketplace/resources"), post(flow::create_resource))
        .route(
            &at("/marketplace/resources/{resource_id}"),
            get(flow::get_resource).delete(flow::delete_resource),
        )
        .route(
            &at("/marketplace/resources/{resource_id}/connect"),
            post(flow::connect),
        )
        .route(
            &at("/marketplace/resources/{resource_id}/plan"),
            axum::routing::patch(flow::change_plan),
        )
}
