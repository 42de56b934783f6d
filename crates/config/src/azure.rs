//! Azure Marketplace settings.

use serde::{Deserialize, Serialize};

/// The Marketplace SaaS API's Entra resource (application) id: the
/// `resource`/`scope` of our access tokens and the `appid`/`azp` of the
/// tokens Microsoft signs its webhook calls with.
pub const AZURE_MARKETPLACE_RESOURCE: &str = "20e940b3-4c77-4b0b-9a53-9e16a1b010a7";

/// Azure Marketplace (Microsoft commercial marketplace) SaaS settings. Empty
/// `client_id` leaves Azure off.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AzureOptions {
    /// The Entra application (client) id of the offer's technical
    /// configuration; empty leaves Azure Marketplace off.
    pub client_id: String,
    /// The Entra tenant id of the offer's technical configuration.
    pub tenant_id: String,
    /// The Entra application's client secret (prefer `client_secret_file`).
    pub client_secret: String,
    /// A file holding the client secret.
    pub client_secret_file: String,
    /// The Entra sign-in authority (`{login_base_url}/{tenant_id}/...`).
    pub login_base_url: String,
    /// Client-credentials token endpoint; empty means
    /// `{login_base_url}/{tenant_id}/oauth2/token` (Entra v1).
    pub token_url: String,
    /// The resource our tokens are for (the Marketplace SaaS API).
    pub resource: String,
    /// Base URL of the SaaS Fulfillment API v2 (`.../api`).
    pub fulfillment_base_url: String,
    /// Base URL of the marketplace metering API (`.../api`).
    pub metering_base_url: String,
    /// OpenID configuration whose `jwks_uri` holds the keys of webhook
    /// tokens; empty means
    /// `{login_base_url}/{tenant_id}/.well-known/openid-configuration`.
    pub openid_configuration_url: String,
    /// Expected `appid` (v1) or `azp` (v2) of webhook tokens: the
    /// Marketplace service. Empty skips that check (Microsoft's emulator
    /// signs its webhooks with our own app).
    pub webhook_app_id: String,
    /// Accepted clock difference for webhook tokens' `exp`/`nbf`, seconds
    /// (at most 60).
    pub webhook_clock_skew_seconds: u64,
    /// Accept webhook calls without a token. Only for Microsoft's emulator
    /// run offline; never in production.
    pub insecure_accept_unsigned_webhooks: bool,
    /// Call the API with a locally built, unsigned token carrying
    /// `tid`/`appid` instead of an Entra token: what Microsoft's emulator
    /// needs offline. Never in production.
    pub emulator_access_token: bool,
    /// Gateway path of the landing page (the offer's "Landing page URL"
    /// is `gateway.public_url` + this path).
    pub landing_path: String,
    /// Gateway path of the connection webhook (the offer's "Connection
    /// webhook" is `gateway.public_url` + this path).
    pub webhook_path: String,
    /// How often subscriptions are reconciled with List subscriptions,
    /// in seconds.
    pub reconcile_interval_seconds: u64,
}

impl Default for AzureOptions {
    fn default() -> Self {
        Self {
            client_id: String::new(),
            tenant_id: String::new(),
            client_secret: String::new(),
            client_secret_file: String::new(),
            login_base_url: "https://login.microsoftonline.com".into(),
            token_url: String::new(),
            resource: AZURE_MARKETPLACE_RESOURCE.into(),
            fulfillment_base_url: "https://marketplaceapi.microsoft.com/api".into(),
            metering_base_url: "https://marketplaceapi.microsoft.com/api".into(),
            openid_configuration_url: String::new(),
            webhook_app_id: AZURE_MARKETPLACE_RESOURCE.into(),
            webhook_clock_skew_seconds: 60,
            insecure_accept_unsigned_webhooks: false,
            emulator_access_token: false,
            landing_path: "/azure/landing".into(),
            webhook_path: "/webhooks/azure".into(),
            reconcile_interval_seconds: 86_400,
        }
    }
}

impl AzureOptions {
    /// True when Azure Marketplace is configured.
    pub fn enabled(&self) -> bool {
        !self.client_id.trim().is_empty()
    }

    /// The client-credentials token endpoint.
    pub fn token_endpoint(&self) -> String {
        if !self.token_url.trim().is_empty() {
            return self.token_url.trim().to_owned();
        }
        format!(
            "{}/{}/oauth2/token",
            self.login_base_url.trim().trim_end_matches('/'),
            self.tenant_id.trim()
        )
    }

    /// The OpenID configuration of the publisher's tenant.
    pub fn openid_configuration(&self) -> String {
        if !self.openid_configuration_url.trim().is_empty() {
            return self.openid_configuration_url.trim().to_owned();
        }
        format!(
            "{}/{}/.well-known/openid-configuration",
            self.login_base_url.trim().trim_end_matches('/'),
            self.tenant_id.trim()
        )
    }
}
