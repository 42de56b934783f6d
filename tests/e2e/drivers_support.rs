//! What the driver tests share: direct accounts, catalogs written to a
//! temporary file, and a slice of the real PostgreSQL server whose databases
//! and roles are dropped when the test ends.

#![allow(dead_code)]

use crate::support::TestSet;
use marketbridge_config::Config;
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::common::v1::{Marketplace, MarketplaceRef, RequestContext, Secret};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_provisioning::driver::postgres::names::quote_identifier;
use marketbridge_storage::testing::{POSTGRES_ENV, database_url_with_name};
use sea_orm::sqlx::{self, Connection, PgConnection};

/// A request context with an idempotency key.
pub fn context(key: &str) -> Option<RequestContext> {
    Some(RequestContext {
        idempotency_key: key.to_owned(),
        actor: None,
    })
}

/// An account created directly (no marketplace), signup done.
pub async fn direct_account(test: &TestSet, external_id: &str) -> account_pb::Account {
    let mut accounts = test.set.clients.account.clone();
    accounts
        .upsert_account(account_pb::UpsertAccountRequest {
            marketplace_ref: Some(MarketplaceRef::new(Marketplace::Direct, external_id)),
            display_name: format!("Team {external_id}"),
            ..Default::default()
        })
        .await
        .expect("account upsert")
        .into_inner()
}

/// The secret called `name`.
pub fn secret<'a>(secrets: &'a [Secret], name: &str) -> &'a str {
    secrets
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.value.as_str())
        .unwrap_or_else(|| panic!("no secret {name}"))
}

/// A resource as provisioning describes it now.
pub async fn resource(test: &TestSet, resource_id: &str) -> provisioning_pb::Resource {
    let mut provisioning = test.set.clients.provisioning.clone();
    provisioning
        .get_resource(provisioning_pb::GetResourceRequest {
            resource_id: resource_id.to_owned(),
            ..Default::default()
        })
        .await
        .expect("get resource")
        .into_inner()
}

/// The current secrets of a resource.
pub async fn current_secrets(test: &TestSet, resource_id: &str) -> Vec<Secret> {
    let mut provisioning = test.set.clients.provisioning.clone();
    provisioning
        .get_resource_secrets(provisioning_pb::GetResourceSecretsRequest {
            resource_id: resource_id.to_owned(),
        })
        .await
        .expect("get secrets")
        .into_inner()
        .secrets
}

/// A catalog file that lives as long as the value.
pub struct CatalogFile {
    folder: tempfile::TempDir,
}

impl CatalogFile {
    /// Writes `text` as a catalog.
    pub fn new(text: &str) -> CatalogFile {
        let folder = tempfile::tempdir().expect("temporary folder");
        std::fs::write(folder.path().join("catalog.toml"), text).expect("write the catalog");
        CatalogFile { folder }
    }

    /// Its path.
    pub fn path(&self) -> String {
        self.folder
            .path()
            .join("catalog.toml")
            .display()
            .to_string()
    }
}

/// A slice of the PostgreSQL server of `MARKETBRIDGE_TEST_POSTGRES_URL`:
/// every database and role the test makes starts with `prefix`, and all of
/// them are dropped when the value goes.
pub struct PostgresSandbox {
    /// The admin URL.
    pub admin_url: String,
    /// The name prefix of this test's databases and roles.
    pub prefix: String,
}

impl PostgresSandbox {
    /// A sandbox, or `None` (with a note) when no server is configured.
    pub fn open() -> Option<PostgresSandbox> {
        let Some(admin_url) = std::env::var(POSTGRES_ENV).ok().filter(|v| !v.is_empty()) else {
            eprintln!("skipping the postgres driver test: {POSTGRES_ENV} is not set");
            return None;
        };
        Some(PostgresSandbox {
            admin_url,
            prefix: format!("mbe{:08x}_", rand_suffix()),
        })
    }

    /// A connection as the admin.
    pub async fn admin(&self) -> PgConnection {
        PgConnection::connect(&self.admin_url)
            .await
            .expect("admin connection")
    }

    /// Runs SQL the test wrote itself, as the admin.
    pub async fn admin_execute(&self, sql: &str) {
        let mut admin = self.admin().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A URL of `database` as `user`, without password (the server trusts
    /// loopback; it still checks the role may log in and connect).
    pub fn url_as(&self, user: &str, database: &str) -> String {
        let mut url =
            url::Url::parse(&database_url_with_name(&self.admin_url, database)).expect("admin URL");
        url.set_username(user).expect("user");
        url.set_password(None).expect("password");
        url.to_string()
    }

    /// The SCRAM verifier the server keeps for `role` (`None`: no password).
    pub async fn stored_verifier(&self, role: &str) -> Option<String> {
        let mut admin = self.admin().await;
        sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
            .bind(role)
            .fetch_one(&mut admin)
            .await
            .expect("the role exists")
    }

    /// True when a database of that name exists.
    pub async fn database_exists(&self, name: &str) -> bool {
        let mut admin = self.admin().await;
        sqlx::query_scalar::<_, i32>("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_optional(&mut admin)
            .await
            .expect("query")
            .is_some()
    }

    /// How many of `names` are roles.
    pub async fn roles_named(&self, names: &[String]) -> i64 {
        let mut admin = self.admin().await;
        sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = ANY($1)")
            .bind(names.to_vec())
            .fetch_one(&mut admin)
            .await
            .expect("query")
    }

    /// Databases and roles outside this sandbox, as `(databases, roles)`.
    pub async fn others(&self) -> (Vec<String>, Vec<String>) {
        let mut admin = self.admin().await;
        let pattern = format!("{}%", self.prefix);
        let databases = sqlx::query_scalar(
            "SELECT datname FROM pg_database WHERE datname NOT LIKE $1 AND datname NOT LIKE 'mb%' ORDER BY 1",
        )
        .bind(&pattern)
        .fetch_all(&mut admin)
        .await
        .expect("query");
        let roles = sqlx::query_scalar(
            "SELECT rolname FROM pg_roles WHERE rolname NOT LIKE $1 AND rolname NOT LIKE 'mb%' ORDER BY 1",
        )
        .bind(&pattern)
        .fetch_all(&mut admin)
        .await
        .expect("query");
        (databases, roles)
    }

    /// Sets the `postgres` driver's configuration to this server.
    pub fn configure(&self, config: &mut Config) {
        config.provisioning.postgres_admin_url = self.admin_url.clone();
    }
}

fn rand_suffix() -> u32 {
    let id = uuid::Uuid::new_v4();
    let bytes = id.as_bytes();
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

impl Drop for PostgresSandbox {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let pattern = format!("{}%", self.prefix);
        // Dropping needs async I/O; do it on a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(mut admin) = PgConnection::connect(&admin_url).await else {
                    return;
                };
                let databases: Vec<String> =
                    sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE $1")
                        .bind(&pattern)
                        .fetch_all(&mut admin)
                        .await
                        .unwrap_or_default();
                for name in databases {
                    if let Ok(quoted) = quote_identifier(&name) {
                        let sql = format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)");
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                            .execute(&mut admin)
                            .await;
                    }
                }
                let roles: Vec<String> =
                    sqlx::query_scalar("SELECT rolname FROM pg_roles WHERE rolname LIKE $1")
                        .bind(&pattern)
                        .fetch_all(&mut admin)
                        .await
                        .unwrap_or_default();
                for name in roles {
                    if let Ok(quoted) = quote_identifier(&name) {
                        let sql = format!("DROP ROLE IF EXISTS {quoted}");
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                            .execute(&mut admin)
                            .await;
                    }
                }
            });
        })
        .join();
    }
}
