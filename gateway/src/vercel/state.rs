//! What the Vercel adapter keeps for its handlers: the token verifier, the
//! Vercel API client, the session key and the settings read once from the
//! configuration. It names no handler, so the gateway's shared state can
//! hold it.

use super::cache::AccountCache;
use super::session::SessionKey;
use marketbridge_catalog::{Catalog, ServedPlans};
use marketbridge_config::Config;
use marketbridge_core::Result;
use marketbridge_core::time::SharedClock;
use marketbridge_vercel::model::plan::BillingPlan;
use marketbridge_vercel::{OidcVerifier, VercelApi};
use std::collections::HashMap;
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
    pub sessions: SessionKey,
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
    /// The product catalog (`catalog.path`), read as billing reads it: plan
    /// listings are answered from it without a call.
    pub catalog: Arc<Catalog>,
    /// Installations' accounts recently read, for partner reads.
    pub accounts: Arc<AccountCache>,
    /// Every plan of the catalog as billing serves it, converted once (the
    /// catalog does not change while the gateway runs).
    pub served_plans: Arc<ServedPlans>,
    /// The same plans as Vercel shows them, by product and plan id.
    pub billing_plans: Arc<HashMap<String, HashMap<String, BillingPlan>>>,
}

impl VercelState {
    /// State from configuration, on the system clock.
    pub fn new(config: &Config) -> Result<Self> {
        Self::with_clock(config, marketbridge_core::time::system_clock())
    }

    /// State from configuration; cached accounts expire on `clock`.
    pub fn with_clock(config: &Config, clock: SharedClock) -> Result<Self> {
        let http = marketbridge_rpc::http::outbound_client(&config.tls, Duration::from_secs(10))?;
        let catalog = Arc::new(Catalog::load(&config.catalog.path)?);
        let served_plans = Arc::new(ServedPlans::of(&catalog));
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
            sessions: SessionKey::from_config(config),
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
            import_return_origins: origins(&vercel.import_return_origins),
            allowed_environments_field: vercel.allowed_environments_field.trim().to_owned(),
            billing_plans: Arc::new(billing_plans(&catalog, &served_plans)),
            served_plans,
            catalog,
            accounts: Arc::new(AccountCache::new(clock, super::cache::CAPACITY)),
        })
    }

    /// True when sessions must only travel over HTTPS.
    pub fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}

/// Every plan of `catalog` that converts, as Vercel shows it (one that does
/// not is converted, and refused, when asked for).
fn billing_plans(
    catalog: &Catalog,
    served: &ServedPlans,
) -> HashMap<String, HashMap<String, BillingPlan>> {
    let mut plans: HashMap<String, HashMap<String, BillingPlan>> = HashMap::new();
    for product in catalog.products() {
        for plan in &product.plans {
            if let Ok(proto) = served.get(product, plan) {
                plans
                    .entry(product.id.clone())
                    .or_default()
                    .insert(plan.id.clone(), super::convert::billing_plan(&proto));
            }
        }
    }
    plans
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

/// The origins of `vercel.import_return_origins`, serialised.
pub fn origins(configured: &str) -> Vec<String> {
    configured
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .filter_map(|o| url::Url::parse(o).ok())
        .map(|u| u.origin().ascii_serialization())
        .filter(|o| o != "null")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_origins_are_serialised_and_bad_ones_dropped() {
        assert_eq!(
            origins(" https://vercel.com/ , http://127.0.0.1:9/x,not a url,"),
            vec!["https://vercel.com", "http://127.0.0.1:9"]
        );
    }
}
