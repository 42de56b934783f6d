//! The built-in `postgres` driver: every resource is a PostgreSQL database on
//! a server the provider runs. The database belongs to the admin role; the
//! customer's objects belong to a role of the resource's own, and the
//! customer logs in with login roles whose passwords are the secrets. The
//! layout and why no customer role can lift a limit: [`layout`] and
//! "postgres driver role layout" in ARCHITECTURE.md.
//!
//! - **Start**: every database the driver made is brought to the current
//!   layout (databases of the first layout, owned by the customer's role,
//!   are taken back), and databases any role may connect to are named in a
//!   warning with the statement that closes them.
//! - **Provision**: the roles (unable to log in), the database and its
//!   privileges; the login with the password decided in [`Driver::prepare`]
//!   is enabled last, and disabled again when a step fails. The plan's
//!   `max_connections` is the connection limit of the database and of each
//!   login.
//! - **Rotate**: each resource has two login roles (`…_a`, `…_b`). A
//!   rotation gives the idle one a new password; the old login keeps
//!   working until the revoke job disables it after the grace period the
//!   customer asked for. Sessions act as the owner role, so objects belong
//!   to the owner whichever login created them.
//! - **Suspend / resume**: the logins may not log in and the database
//!   refuses connections; open sessions are ended. Data is kept. Resuming
//!   re-enables the current login.
//! - **Delete**: suspended at once, dropped with its roles after
//!   `provisioning.postgres_deletion_grace_seconds`.
//! - **Usage**: database size and open connections, recorded against the
//!   metrics named by `storage_metric` and `connections_metric`. Over the
//!   plan's `storage_mb` the logins act as the reader role (they may read,
//!   not write) until the database shrinks or the plan grows.
//!
//! Passwords reach the server only as SCRAM-SHA-256 verifiers.

pub mod admin;
pub mod console;
pub mod layout;
pub mod names;
pub mod scram;
pub mod settings;

use super::{Driver, DriverContext, Measurement, Prepared, Provisioned, Rotation, Secret};
use admin::Admin;
use async_trait::async_trait;
use layout::{Layout, Limits};
use marketbridge_catalog::Product;
use marketbridge_config::ProvisioningOptions;
use marketbridge_core::crypto::random_token;
use marketbridge_core::ids::ResourceId;
use marketbridge_core::{Error, Result};
use names::{ResourceNames, Slot, quote_identifier};
use serde_json::json;
use settings::{Endpoint, ProductSettings, ServerSettings};
use std::collections::BTreeMap;

// The names of the secrets the driver hands out (libpq's environment).
/// Secret: connection URL.
pub const SECRET_DATABASE_URL: &str = "DATABASE_URL";
/// Secret: host.
pub const SECRET_PGHOST: &str = "PGHOST";
/// Secret: port.
pub const SECRET_PGPORT: &str = "PGPORT";
/// Secret: login role.
pub const SECRET_PGUSER: &str = "PGUSER";
/// Secret: password of the login role.
pub const SECRET_PGPASSWORD: &str = "PGPASSWORD";
/// Secret: database.
pub const SECRET_PGDATABASE: &str = "PGDATABASE";

/// Random bytes in a password (32 characters of URL-safe text).
const PASSWORD_BYTES: usize = 24;

/// See the module documentation.
#[derive(Clone)]
pub struct PostgresDriver {
    server: ServerSettings,
    admin: Admin,
}

impl std::fmt::Debug for PostgresDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresDriver")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// A host and port as they go into a URL (IPv6 addresses in brackets).
fn url_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

impl PostgresDriver {
    /// A driver on `server`; connects on first use.
    pub fn new(server: ServerSettings) -> Self {
        let admin = Admin::connect_lazy(server.admin.clone(), server.acquire_timeout);
        Self { server, admin }
    }

    /// The driver the configuration describes; `None` when no admin URL is
    /// set.
    pub fn from_options(options: &ProvisioningOptions) -> Result<Option<Self>> {
        Ok(ServerSettings::from_options(options)?.map(Self::new))
    }

    /// The admin connection (operators' tooling and tests).
    pub fn admin(&self) -> &Admin {
        &self.admin
    }

    /// The resource id of `context`, checked: only a well-formed id
    /// becomes part of a name.
    fn resource_id(context: &DriverContext<'_>) -> Result<ResourceId> {
        ResourceId::parse("resource_id", context.resource_id)
    }

    /// The database and role names of the resource in `context`.
    pub fn names(context: &DriverContext<'_>) -> Result<ResourceNames> {
        let settings = ProductSettings::of(context.product)?;
        ResourceNames::new(&settings.name_prefix, &Self::resource_id(context)?)
    }

    fn resource(context: &DriverContext<'_>) -> Result<(ProductSettings, ResourceNames)> {
        let settings = ProductSettings::of(context.product)?;
        let names = ResourceNames::new(&settings.name_prefix, &Self::resource_id(context)?)?;
        Ok((settings, names))
    }

    fn current_slot(context: &DriverContext<'_>) -> Slot {
        Slot::parse(
            context
                .state
                .get("login_slot")
                .and_then(|v| v.as_str())
                .unwrap_or_default(),
        )
    }

    fn state(names: &ResourceNames, slot: Slot) -> serde_json::Value {
        json!({ "database": names.database, "login_slot": slot.as_str() })
    }

    /// The endpoint `overrides` describes, with defaults from the product
    /// and then the server.
    fn endpoint(&self, settings: &ProductSettings, overrides: &Endpoint) -> (String, u16, String) {
        let product = settings.endpoint();
        let host = [&overrides.host, &product.host]
            .into_iter()
            .find(|h| !h.trim().is_empty())
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|| self.server.host.clone());
        let port = [overrides.port, product.port]
            .into_iter()
            .find(|p| *p != 0)
            .unwrap_or(self.server.port);
        let parameters = overrides
            .url_parameters
            .clone()
            .or(product.url_parameters)
            .unwrap_or_else(|| self.server.url_parameters.clone());
        (
            host,
            port,
            parameters.trim().trim_start_matches('?').to_owned(),
        )
    }

    fn url(
        (host, port, parameters): &(String, u16, String),
        user: &str,
        password: &str,
        database: &str,
    ) -> String {
        // User, password and database are [A-Za-z0-9_-] only: nothing to escape.
        let mut url = format!(
            "postgresql://{user}:{password}@{}:{port}/{database}",
            url_host(host)
        );
        if !parameters.is_empty() {
            url.push('?');
            url.push_str(parameters);
        }
        url
    }

    fn secrets(
        &self,
        settings: &ProductSettings,
        names: &ResourceNames,
        slot: Slot,
        password: &str,
    ) -> Vec<Secret> {
        let user = names.login(slot);
        let default = self.endpoint(settings, &Endpoint::default());
        let mut url_overrides = BTreeMap::new();
        let mut host_overrides = BTreeMap::new();
        let mut port_overrides = BTreeMap::new();
        for (environment, overrides) in &settings.environments {
            let endpoint = self.endpoint(settings, overrides);
            url_overrides.insert(
                environment.clone(),
                Self::url(&endpoint, user, password, &names.database),
            );
            host_overrides.insert(environment.clone(), endpoint.0.clone());
            port_overrides.insert(environment.clone(), endpoint.1.to_string());
        }
        vec![
            Secret {
                name: SECRET_DATABASE_URL.into(),
                value: Self::url(&default, user, password, &names.database),
                environment_overrides: url_overrides,
            },
            Secret {
                name: SECRET_PGHOST.into(),
                value: default.0.clone(),
                environment_overrides: host_overrides,
            },
            Secret {
                name: SECRET_PGPORT.into(),
                value: default.1.to_string(),
                environment_overrides: port_overrides,
            },
            Secret::new(SECRET_PGUSER, user),
            Secret::new(SECRET_PGPASSWORD, password),
            Secret::new(SECRET_PGDATABASE, names.database.clone()),
        ]
    }

    /// The login slot and password `secrets` hold, checked to belong to the
    /// resource.
    fn credential(names: &ResourceNames, secrets: &[Secret]) -> Result<(Slot, String)> {
        let value = |name: &str| {
            secrets
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.value.clone())
        };
        let (Some(user), Some(password)) = (value(SECRET_PGUSER), value(SECRET_PGPASSWORD)) else {
            return Err(Error::unprocessable(
                "postgres: the secrets lack PGUSER or PGPASSWORD",
            ));
        };
        let slot = names.slot_of(&user).ok_or_else(|| {
            Error::unprocessable(format!(
                "postgres: PGUSER `{user}` is not a login of database {}",
                names.database
            ))
        })?;
        Ok((slot, password))
    }

    fn limits(context: &DriverContext<'_>, over_quota: Option<bool>) -> Limits {
        Limits {
            connection_limit: settings::connection_limit(context.plan),
            over_quota,
        }
    }

    /// True when `size_bytes` is over the storage quota of the plan.
    fn over_quota(context: &DriverContext<'_>, size_bytes: u64) -> bool {
        settings::storage_quota_bytes(context.plan).is_some_and(|quota| size_bytes > quota)
    }

    /// Lets the logins write while the database is within the plan's
    /// storage quota, and only read while it is over.
    async fn enforce_storage_quota(
        &self,
        context: &DriverContext<'_>,
        names: &ResourceNames,
        size_bytes: u64,
    ) -> Result<()> {
        let over_quota = Self::over_quota(context, size_bytes);
        let layout = Layout::new(&self.admin, names);
        if layout.is_over_quota().await? == over_quota {
            return Ok(());
        }
        layout.apply_quota(over_quota).await?;
        if over_quota {
            tracing::warn!(resource.id = %context.resource_id, size_bytes, plan = %context.plan.id, "database over its storage quota; now read-only");
        } else {
            tracing::info!(resource.id = %context.resource_id, size_bytes, plan = %context.plan.id, "database within its storage quota; writable again");
        }
        Ok(())
    }

    async fn provision_steps(
        &self,
        context: &DriverContext<'_>,
        names: &ResourceNames,
        slot: Slot,
        verifier: &str,
    ) -> Result<()> {
        let layout = Layout::new(&self.admin, names);
        layout.apply(Self::limits(context, None)).await?;
        self.admin
            .execute(
                "accept connections",
                &format!(
                    "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true",
                    quote_identifier(&names.database)?
                ),
            )
            .await?;
        layout.enable_login(slot, verifier).await
    }

    /// Brings one database of the driver to the current layout, keeping its
    /// connection limit, quota state and suspension.
    async fn migrate_database(&self, names: &ResourceNames) -> Result<()> {
        let Some(info) = self.admin.database_info(&names.database).await? else {
            return Ok(());
        };
        let layout = Layout::new(&self.admin, names);
        layout
            .apply(Limits {
                connection_limit: i64::from(info.connection_limit),
                over_quota: None,
            })
            .await?;
        if !info.allows_connections {
            layout.suspend().await?;
        }
        Ok(())
    }

    /// Statements an operator should run so that customers' logins cannot
    /// connect to databases that are not theirs (databases any role may
    /// connect to); empty when there are none.
    pub async fn public_access_statements(&self) -> Result<Vec<String>> {
        let open = self.admin.databases_open_to_public().await?;
        if open.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![format!(
            "REVOKE CONNECT ON DATABASE {} FROM PUBLIC",
            open.join(", ")
        )])
    }

    /// The start-up step: checks the server and brings every database the
    /// driver made for `products` to the current layout. Returns how many
    /// databases were brought; a database that fails is logged and the
    /// others go on.
    pub async fn migrate(&self, products: &[&Product]) -> Result<usize> {
        let (admin_role, superuser) = self.admin.identity().await?;
        if !superuser {
            let (createdb, createrole) = self.admin.admin_attributes().await?;
            if !(createdb && createrole) {
                tracing::warn!(role = %admin_role, "the postgres admin role needs CREATEDB and CREATEROLE");
            }
        }
        for statement in self.public_access_statements().await? {
            tracing::warn!(statement = %statement, "customers' logins may connect to databases that are not theirs (they cannot read them, but they can list catalogs); run this as a superuser");
        }
        let mut prefixes: Vec<String> = Vec::new();
        for product in products {
            let prefix = ProductSettings::of(product)?.name_prefix;
            if !prefixes.contains(&prefix) {
                prefixes.push(prefix);
            }
        }
        let mut migrated = 0;
        for prefix in &prefixes {
            for database in self.admin.databases_starting_with(prefix).await? {
                let Some(names) = ResourceNames::of_database(prefix, &database) else {
                    continue;
                };
                match self.migrate_database(&names).await {
                    Ok(()) => migrated += 1,
                    Err(error) => {
                        tracing::error!(resource.id = %names.resource_id, database = %database, error = %error, "could not bring the database to the current role layout");
                    }
                }
            }
        }
        tracing::info!(
            databases = migrated,
            "postgres databases on the current role layout"
        );
        Ok(migrated)
    }
}

#[async_trait]
impl Driver for PostgresDriver {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn check_product(&self, product: &Product) -> Result<()> {
        ProductSettings::of(product).map(|_| ())
    }

    fn deletion_grace_seconds(&self, _context: &DriverContext<'_>) -> u64 {
        self.server.deletion_grace_seconds
    }

    async fn start(&self, products: &[&Product]) -> Result<()> {
        self.migrate(products).await.map(|_| ())
    }

    async fn prepare(&self, context: &DriverContext<'_>) -> Result<Prepared> {
        let (settings, names) = Self::resource(context)?;
        let password = random_token(PASSWORD_BYTES);
        Ok(Prepared {
            secrets: self.secrets(&settings, &names, Slot::A, &password),
            state: Self::state(&names, Slot::A),
            ready: false,
            delay_seconds: 0,
        })
    }

    async fn provision(
        &self,
        context: &DriverContext<'_>,
        secrets: &[Secret],
    ) -> Result<Provisioned> {
        let (_, names) = Self::resource(context)?;
        let (slot, password) = Self::credential(&names, secrets)?;
        let verifier = scram::verifier(&password)?;
        if let Err(error) = self.provision_steps(context, &names, slot, &verifier).await {
            // Leave nothing usable behind: a retry enables it again.
            if let Err(cleanup) = Layout::new(&self.admin, &names).suspend().await {
                tracing::warn!(resource.id = %context.resource_id, error = %cleanup, "could not disable a database whose provisioning failed");
            }
            return Err(error);
        }
        tracing::info!(resource.id = %context.resource_id, database = %names.database, "database provisioned");
        Ok(Provisioned::Ready)
    }

    async fn apply_plan(&self, context: &DriverContext<'_>) -> Result<()> {
        let (_, names) = Self::resource(context)?;
        let Some(usage) = self.admin.usage(&names.database).await? else {
            return Ok(());
        };
        let over_quota = Self::over_quota(context, usage.size_bytes);
        Layout::new(&self.admin, &names)
            .apply(Self::limits(context, Some(over_quota)))
            .await?;
        Ok(())
    }

    async fn rotate(&self, context: &DriverContext<'_>, _current: &[Secret]) -> Result<Rotation> {
        let (settings, names) = Self::resource(context)?;
        let slot = Self::current_slot(context).other();
        let password = random_token(PASSWORD_BYTES);
        Ok(Rotation {
            secrets: self.secrets(&settings, &names, slot, &password),
            // The new login is enabled by `complete_rotation`, in the outbox.
            sync: false,
            partial: false,
            state: Self::state(&names, slot),
        })
    }

    async fn complete_rotation(
        &self,
        context: &DriverContext<'_>,
        secrets: &[Secret],
    ) -> Result<()> {
        let (_, names) = Self::resource(context)?;
        let (slot, password) = Self::credential(&names, secrets)?;
        let verifier = scram::verifier(&password)?;
        let layout = Layout::new(&self.admin, &names);
        layout.apply(Self::limits(context, None)).await?;
        layout.enable_login(slot, &verifier).await
    }

    async fn revoke(&self, context: &DriverContext<'_>, old: &[Secret]) -> Result<()> {
        let (_, names) = Self::resource(context)?;
        let current = Self::current_slot(context);
        if let Ok((old_slot, _)) = Self::credential(&names, old)
            && old_slot == current
        {
            // A later rotation moved back to this login: it is in use again.
            tracing::info!(resource.id = %context.resource_id, "old secrets are current again; nothing to revoke");
            return Ok(());
        }
        self.admin.disable_login(names.login(current.other())).await
    }

    async fn suspend(&self, context: &DriverContext<'_>) -> Result<()> {
        let (_, names) = Self::resource(context)?;
        Layout::new(&self.admin, &names).suspend().await
    }

    async fn resume(&self, context: &DriverContext<'_>) -> Result<()> {
        let (_, names) = Self::resource(context)?;
        Layout::new(&self.admin, &names)
            .resume(Self::current_slot(context))
            .await
    }

    async fn deprovision(&self, context: &DriverContext<'_>) -> Result<()> {
        let (_, names) = Self::resource(context)?;
        let (admin_role, superuser) = self.admin.identity().await?;
        if !superuser
            && let Some(info) = self.admin.database_info(&names.database).await?
            && info.owner != admin_role
        {
            // A database of the first layout, never migrated.
            self.admin
                .execute(
                    "make the admin a member of the owner role",
                    &format!(
                        "GRANT {} TO {}",
                        quote_identifier(&info.owner)?,
                        quote_identifier(&admin_role)?
                    ),
                )
                .await?;
        }
        self.admin
            .execute(
                "drop the database",
                &format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_identifier(&names.database)?
                ),
            )
            .await?;
        let roles = [
            quote_identifier(&names.logins[0])?,
            quote_identifier(&names.logins[1])?,
            quote_identifier(&names.reader)?,
            quote_identifier(&names.owner)?,
        ]
        .join(", ");
        self.admin
            .execute("drop the roles", &format!("DROP ROLE IF EXISTS {roles}"))
            .await?;
        tracing::info!(resource.id = %context.resource_id, database = %names.database, "database dropped");
        Ok(())
    }

    async fn measure(&self, context: &DriverContext<'_>) -> Result<Vec<Measurement>> {
        let (settings, names) = Self::resource(context)?;
        let Some(usage) = self.admin.usage(&names.database).await? else {
            return Ok(Vec::new());
        };
        self.enforce_storage_quota(context, &names, usage.size_bytes)
            .await?;
        let mut measurements = Vec::new();
        if let Some(metric) = settings
            .storage_metric
            .as_deref()
            .and_then(|id| context.plan.metric(id))
        {
            measurements.push(Measurement {
                metric_id: metric.id.clone(),
                quantity: settings::storage_quantity(metric, usage.size_bytes)?,
            });
        }
        if let Some(metric) = settings
            .connections_metric
            .as_deref()
            .and_then(|id| context.plan.metric(id))
        {
            measurements.push(Measurement {
                metric_id: metric.id.clone(),
                quantity: usage.connections.max(0),
            });
        }
        Ok(measurements)
    }

    fn console_help(&self) -> Option<&'static str> {
        Some(console::HELP)
    }

    async fn console(
        &self,
        context: &DriverContext<'_>,
        secrets: &[Secret],
        input: &str,
        read_only: bool,
    ) -> Result<Vec<marketbridge_proto::provisioning::v1::OutputBlock>> {
        let (_, names) = Self::resource(context)?;
        let value = |name: &str| {
            secrets
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.value.clone())
                .ok_or_else(|| Error::conflict("the database has no credentials yet"))
        };
        let options = self.admin.options_as(
            &names.database,
            &value(SECRET_PGUSER)?,
            &value(SECRET_PGPASSWORD)?,
        );
        console::run(options, input, read_only).await
    }
}
