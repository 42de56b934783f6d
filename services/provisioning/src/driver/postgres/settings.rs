//! What the `postgres` driver is configured with: the server (from the
//! service configuration) and each product's `[products.postgres]` table
//! (from the catalog).

use super::names::check_prefix;
use marketbridge_catalog::{Metric, Plan, Product};
use marketbridge_config::ProvisioningOptions;
use marketbridge_core::{Error, Result};
use sea_orm::sqlx;
use sea_orm::sqlx::ConnectOptions;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::str::FromStr;

/// Plan limit: most simultaneous connections to the database.
pub const LIMIT_MAX_CONNECTIONS: &str = "max_connections";
/// Plan limit: storage quota in MiB, checked by the usage meter.
pub const LIMIT_STORAGE_MB: &str = "storage_mb";

/// The server customer databases live on.
#[derive(Clone)]
pub struct ServerSettings {
    /// Admin connection options (with the admin password).
    pub admin: sqlx::postgres::PgConnectOptions,
    /// Host customers connect to.
    pub host: String,
    /// Port customers connect to.
    pub port: u16,
    /// Query parameters of customer URLs (`sslmode=require`), without `?`.
    pub url_parameters: String,
    /// Seconds a deleted database is kept before it is dropped.
    pub deletion_grace_seconds: u64,
    /// How long a statement waits for an admin connection before the
    /// attempt fails (and its job is retried).
    pub acquire_timeout: std::time::Duration,
}

impl std::fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The admin options hold a password; show where they point only.
        f.debug_struct("ServerSettings")
            .field("admin_host", &self.admin.get_host())
            .field("admin_port", &self.admin.get_port())
            .field("host", &self.host)
            .field("port", &self.port)
            .field("url_parameters", &self.url_parameters)
            .field("deletion_grace_seconds", &self.deletion_grace_seconds)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

impl ServerSettings {
    /// The settings in `options`; `None` when no admin URL is configured.
    pub fn from_options(options: &ProvisioningOptions) -> Result<Option<Self>> {
        if options.postgres_admin_url.trim().is_empty() {
            return Ok(None);
        }
        let url = options.postgres_admin_url.trim();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(Error::validation(
                "provisioning.postgres_admin_url must be a postgres:// URL",
            ));
        }
        let admin = sqlx::postgres::PgConnectOptions::from_str(url)
            .map_err(|e| {
                // The URL may hold a password: name the setting, not the value.
                Error::validation(format!("provisioning.postgres_admin_url is invalid: {e}"))
            })?
            .application_name("marketbridge-provisioning")
            // Statements carry password verifiers; keep them out of logs.
            .disable_statement_logging();
        let host = if options.postgres_host.trim().is_empty() {
            admin.get_host().to_owned()
        } else {
            options.postgres_host.trim().to_owned()
        };
        let port = if options.postgres_port == 0 {
            admin.get_port()
        } else {
            options.postgres_port
        };
        Ok(Some(Self {
            admin,
            host,
            port,
            url_parameters: options
                .postgres_url_parameters
                .trim()
                .trim_start_matches('?')
                .to_owned(),
            deletion_grace_seconds: options.postgres_deletion_grace_seconds,
            acquire_timeout: std::time::Duration::from_secs(10),
        }))
    }
}

/// Where customers connect from one environment (`production`, `preview`,
/// `development`), when it differs from the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Host; empty keeps the default.
    #[serde(default)]
    pub host: String,
    /// Port; 0 keeps the default.
    #[serde(default)]
    pub port: u16,
    /// Query parameters of the URL; `None` keeps the default.
    #[serde(default)]
    pub url_parameters: Option<String>,
}

/// A product's `[products.postgres]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductSettings {
    /// Prefix of database and role names (then the resource id).
    #[serde(default = "default_prefix")]
    pub name_prefix: String,
    /// Host customers connect to; empty keeps the server setting.
    #[serde(default)]
    pub host: String,
    /// Port customers connect to; 0 keeps the server setting.
    #[serde(default)]
    pub port: u16,
    /// Query parameters of customer URLs; `None` keeps the server setting.
    #[serde(default)]
    pub url_parameters: Option<String>,
    /// Per-environment endpoints, which become per-environment values of
    /// `DATABASE_URL`, `PGHOST` and `PGPORT`.
    #[serde(default)]
    pub environments: BTreeMap<String, Endpoint>,
    /// Metric that records the database size, in the metric's unit (`B`,
    /// `KB`, `MB`, `GB`, `TB`, powers of 1024, rounded up).
    #[serde(default)]
    pub storage_metric: Option<String>,
    /// Metric that records how many connections are open.
    #[serde(default)]
    pub connections_metric: Option<String>,
}

fn default_prefix() -> String {
    "mb_".into()
}

impl ProductSettings {
    /// The product's own endpoint settings.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            host: self.host.clone(),
            port: self.port,
            url_parameters: self.url_parameters.clone(),
        }
    }

    /// Reads and checks a product's settings.
    pub fn of(product: &Product) -> Result<Self> {
        let table = product.postgres.clone().unwrap_or_default();
        let settings: ProductSettings = toml::Value::Table(table).try_into().map_err(|e| {
            Error::validation(format!(
                "catalog: product `{}`: [products.postgres]: {e}",
                product.id
            ))
        })?;
        check_prefix(&settings.name_prefix).map_err(|e| {
            Error::validation(format!(
                "catalog: product `{}`: {}",
                product.id,
                e.message()
            ))
        })?;
        if let Some(metric_id) = &settings.storage_metric {
            for plan in &product.plans {
                if let Some(metric) = plan.metric(metric_id) {
                    bytes_per_unit(metric).map_err(|e| {
                        Error::validation(format!(
                            "catalog: product `{}` plan `{}`: {}",
                            product.id,
                            plan.id,
                            e.message()
                        ))
                    })?;
                }
            }
        }
        Ok(settings)
    }
}

/// Bytes in one unit of a storage metric.
pub fn bytes_per_unit(metric: &Metric) -> Result<u64> {
    let factor = match metric.unit.trim().to_ascii_lowercase().as_str() {
        "b" | "byte" | "bytes" => 1,
        "kb" | "kib" => 1 << 10,
        "mb" | "mib" => 1 << 20,
        "gb" | "gib" => 1 << 30,
        "tb" | "tib" => 1 << 40,
        other => {
            return Err(Error::validation(format!(
                "storage metric `{}` has unit `{other}`; use B, KB, MB, GB or TB",
                metric.id
            )));
        }
    };
    Ok(factor)
}

/// Bytes expressed in `metric`'s unit, rounded up.
pub fn storage_quantity(metric: &Metric, bytes: u64) -> Result<i64> {
    let unit = bytes_per_unit(metric)?;
    Ok(i64::try_from(bytes.div_ceil(unit)).unwrap_or(i64::MAX))
}

/// The connection limit of a plan; -1 (none) when it sets none.
pub fn connection_limit(plan: &Plan) -> i64 {
    match plan.limits.get(LIMIT_MAX_CONNECTIONS) {
        Some(limit) if *limit >= 0 => *limit,
        _ => -1,
    }
}

/// The storage quota of a plan in bytes, when it sets one.
pub fn storage_quota_bytes(plan: &Plan) -> Option<u64> {
    plan.limits
        .get(LIMIT_STORAGE_MB)
        .and_then(|mb| u64::try_from(*mb).ok())
        .map(|mb| mb.saturating_mul(1 << 20))
}
