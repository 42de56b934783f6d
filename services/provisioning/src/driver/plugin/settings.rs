//! A product's `[products.plugin]` table.

use marketbridge_catalog::Product;
use marketbridge_core::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Where a product's plug-in runs and the secrets its resources get.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSettings {
    /// gRPC URL of the plug-in (`http://…` or `https://…`).
    pub url: String,
    /// Deadline of one call in milliseconds; unset means
    /// `provisioning.plugin_timeout_ms`.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Secret name → template. Placeholders: `{token}` (fresh random text
    /// at creation and at every rotation), `{resource_id}`, `{account_id}`,
    /// `{product_id}`, `{plan_id}`, `{name}` and the metadata keys.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Secret name → environment → template (per-environment values).
    #[serde(default)]
    pub environment_overrides: BTreeMap<String, BTreeMap<String, String>>,
}

impl PluginSettings {
    /// Reads and checks a product's settings.
    pub fn of(product: &Product) -> Result<Self> {
        let invalid = |message: String| {
            Error::validation(format!(
                "catalog: product `{}`: [products.plugin]: {message}",
                product.id
            ))
        };
        let Some(table) = product.plugin.clone() else {
            return Err(invalid(
                "missing; a plug-in product needs at least `url`".into(),
            ));
        };
        let settings: PluginSettings = toml::Value::Table(table)
            .try_into()
            .map_err(|e| invalid(e.to_string()))?;
        let url = settings.url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || tonic::transport::Endpoint::from_shared(url.to_owned()).is_err()
        {
            return Err(invalid(format!(
                "url `{url}` must be an http:// or https:// URL"
            )));
        }
        if settings.timeout_ms == Some(0) {
            return Err(invalid("timeout_ms must be positive".into()));
        }
        for name in settings.environment_overrides.keys() {
            if !settings.secrets.contains_key(name) {
                return Err(invalid(format!(
                    "environment_overrides names `{name}`, which is not in secrets"
                )));
            }
        }
        Ok(settings)
    }
}
