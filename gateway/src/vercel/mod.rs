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
//! | `/import` (the Import Resource URL) | [`import`] |
//! | `/marketplace/...` | [`flow`] |

pub mod auth;
pub mod billing;
pub mod body;
pub mod convert;
pub mod dashboard;
pub mod error;
pub mod flow;
pub mod import;
pub mod installations;
pub mod plans;
pub mod resources;
pub mod services;
pub mod session;
pub mod sso;
pub mod transfers;
pub mod webhook;

use crate::openapi::prefixed;
use crate::state::AppState;
use marketbridge_config::Config;
use marketbridge_core::Result;
use marketbridge_vercel::{OidcVerifier, VercelApi};
use std::sync::Arc;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
    /// Origins the import flow may send the browser back to
    /// (`vercel.import_return_origins`), each serialised (`https://vercel.com`).
    pub import_return_origins: Vec<String>,
    /// Update Resource field naming the allowed environments
    /// (`vercel.allowed_environments_field`); empty ignores it.
    pub allowed_environments_field: String,
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
            import_return_origins: import::origins(&vercel.import_return_origins),
            allowed_environments_field: vercel.allowed_environments_field.trim().to_owned(),
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

/// The Vercel routes, each below the base path, with their documentation.
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let base = state.vercel.base_path.as_str();
    let at = |routes| prefixed(base, routes);
    OpenApiRouter::new()
        .routes(at(routes!(
            installations::upsert,
            installations::get,
            installations::update,
            installations::delete
        )))
        .routes(at(routes!(plans::product_plans)))
        .routes(at(routes!(plans::installation_plans)))
        .routes(at(routes!(resources::provision, resources::list)))
        .routes(at(routes!(
            resources::get,
            resources::update,
            resources::delete
        )))
        .routes(at(routes!(plans::resource_plans)))
        .routes(at(routes!(resources::rotate_secrets)))
        .routes(at(routes!(resources::repl)))
        .routes(at(routes!(transfers::create)))
        .routes(at(routes!(transfers::create_with_id)))
        .routes(at(routes!(transfers::verify)))
        .routes(at(routes!(transfers::accept)))
        .routes(at(routes!(billing::provision_purchase)))
        .routes(at(routes!(webhook::receive)))
        .routes(at(routes!(sso::redirect_login)))
        .routes(at(routes!(sso::confirm)))
        .routes(at(routes!(dashboard::installation_page)))
        .routes(at(routes!(dashboard::resource_page)))
        .routes(at(routes!(dashboard::invoice_page)))
        .routes(at(routes!(import::import_page, import::import_submit)))
        .routes(at(routes!(flow::account)))
        .routes(at(routes!(flow::plans)))
        .routes(at(routes!(flow::create_resource)))
        .routes(at(routes!(flow::get_resource, flow::delete_resource)))
        .routes(at(routes!(flow::connect)))
        .routes(at(routes!(flow::change_plan)))
}
