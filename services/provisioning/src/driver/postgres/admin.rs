//! Statements the `postgres` driver runs over its admin connection. Each
//! one is safe to run again: creating what exists, or dropping what is gone,
//! succeeds.

use super::names::quote_identifier;
use marketbridge_core::{Error, Result};
use sea_orm::sqlx;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// SQLSTATE of `CREATE ROLE` for a role that exists.
const DUPLICATE_OBJECT: &str = "42710";
/// SQLSTATE of `CREATE DATABASE` for a database that exists.
const DUPLICATE_DATABASE: &str = "42P04";
/// SQLSTATE of a concurrent insert of the same catalog row.
const UNIQUE_VIOLATION: &str = "23505";

/// What a customer sees when their database cannot be set up for a reason
/// retrying will not fix.
const PERMANENT_USER_MESSAGE: &str =
    "The database could not be set up. The provider has been notified.";

/// Turns a driver error into ours: SQL the server refuses for good (syntax,
/// privileges, data, unsupported features) is permanent, everything else
/// (connections, locks, busy templates, resources) is worth retrying.
pub fn sql_error(action: &str, error: sqlx::Error) -> Error {
    if let sqlx::Error::Database(database_error) = &error {
        let code = database_error.code().unwrap_or_default().into_owned();
        let message = format!(
            "postgres: {action}: {} (SQLSTATE {code})",
            database_error.message()
        );
        return match code.get(..2) {
            Some("42" | "22" | "0A") => {
                Error::unprocessable(message).with_user_message(PERMANENT_USER_MESSAGE)
            }
            _ => Error::unavailable(message),
        };
    }
    Error::unavailable(format!("postgres: {action}: {error}"))
}

fn is_code(error: &sqlx::Error, codes: &[&str]) -> bool {
    match error {
        sqlx::Error::Database(database_error) => database_error
            .code()
            .is_some_and(|code| codes.contains(&code.as_ref())),
        _ => false,
    }
}

/// Size and activity of one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatabaseUsage {
    /// `pg_database_size`, in bytes.
    pub size_bytes: u64,
    /// Backends connected to it now.
    pub connections: i64,
    /// True while it accepts connections.
    pub allows_connections: bool,
}

/// What the server says about one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseInfo {
    /// The owning role.
    pub owner: String,
    /// True while it accepts connections.
    pub allows_connections: bool,
    /// Its connection limit (-1: none).
    pub connection_limit: i32,
    /// True when it has `default_transaction_read_only = on` (how the first
    /// layout enforced the storage quota).
    pub read_only_setting: bool,
}

/// Runs one statement built by this driver on `connection` (see
/// [`Admin::execute`] for what it may contain); `action` names it in errors.
pub(super) async fn execute_on(
    connection: &mut PgConnection,
    action: &str,
    sql: &str,
) -> Result<()> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(connection)
        .await
        .map(|_| ())
        .map_err(|e| sql_error(action, e))
}

/// The admin connection pool, opened on first use.
#[derive(Clone)]
pub struct Admin {
    options: PgConnectOptions,
    acquire_timeout: Duration,
    pool: Arc<OnceLock<PgPool>>,
}

impl Admin {
    /// A pool that connects on first use, so the service starts while the
    /// database server is down and the jobs that need it retry. A statement
    /// waits at most `acquire_timeout` for a connection.
    pub fn connect_lazy(options: PgConnectOptions, acquire_timeout: Duration) -> Self {
        Self {
            options,
            acquire_timeout,
            pool: Arc::new(OnceLock::new()),
        }
    }

    /// Options of a connection to `database` as `user` with `password`, on
    /// the admin connection's server (and TLS settings).
    pub fn options_as(&self, database: &str, user: &str, password: &str) -> PgConnectOptions {
        self.options
            .clone()
            .database(database)
            .username(user)
            .password(password)
    }

    fn pool(&self) -> &PgPool {
        self.pool.get_or_init(|| {
            PgPoolOptions::new()
                .max_connections(4)
                .min_connections(0)
                .acquire_timeout(self.acquire_timeout)
                .idle_timeout(Duration::from_secs(60))
                .connect_lazy_with(self.options.clone())
        })
    }

    /// Runs one statement built by this driver. The one place dynamic SQL
    /// is sent: callers build it only from fixed text, names that went
    /// through [`quote_identifier`], values that went through
    /// [`super::names::quote_literal`], and numbers.
    async fn run(&self, sql: String) -> std::result::Result<(), sqlx::Error> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(self.pool())
            .await
            .map(|_| ())
    }

    /// Runs one statement (see `run` for what it may contain); `action` names
    /// it in errors.
    pub(super) async fn execute(&self, action: &str, sql: &str) -> Result<()> {
        self.run(sql.to_owned())
            .await
            .map_err(|e| sql_error(action, e))
    }

    /// True when a role of that name exists.
    pub async fn role_exists(&self, name: &str) -> Result<bool> {
        let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_roles WHERE rolname = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await
            .map_err(|e| sql_error("look up a role", e))?;
        Ok(found.is_some())
    }

    /// True when a database of that name exists.
    pub async fn database_exists(&self, name: &str) -> Result<bool> {
        let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await
            .map_err(|e| sql_error("look up a database", e))?;
        Ok(found.is_some())
    }

    /// Creates a role that cannot log in, unless it exists.
    pub async fn ensure_role(&self, name: &str) -> Result<()> {
        if self.role_exists(name).await? {
            return Ok(());
        }
        let sql = format!("CREATE ROLE {} NOLOGIN", quote_identifier(name)?);
        match self.run(sql).await {
            Ok(()) => Ok(()),
            Err(error) if is_code(&error, &[DUPLICATE_OBJECT, UNIQUE_VIOLATION]) => Ok(()),
            Err(error) => Err(sql_error("create a role", error)),
        }
    }

    /// Stops `login` from logging in and ends its sessions; nothing happens
    /// when the role does not exist.
    pub async fn disable_login(&self, login: &str) -> Result<()> {
        if !self.role_exists(login).await? {
            return Ok(());
        }
        self.execute(
            "disable a login",
            &format!(
                "ALTER ROLE {} WITH NOLOGIN PASSWORD NULL",
                quote_identifier(login)?
            ),
        )
        .await?;
        self.end_login_sessions(&[login]).await
    }

    /// Ends every session of the `logins`, whatever database they are on.
    pub async fn end_login_sessions(&self, logins: &[&str]) -> Result<()> {
        let logins: Vec<String> = logins.iter().map(|l| (*l).to_owned()).collect();
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY($1) AND pid <> pg_backend_pid()",
        )
        .bind(logins)
        .execute(self.pool())
        .await
        .map_err(|e| sql_error("end the sessions of a login", e))?;
        Ok(())
    }

    /// The admin role's name and whether it is a superuser.
    pub async fn identity(&self) -> Result<(String, bool)> {
        sqlx::query_as("SELECT rolname::text, rolsuper FROM pg_roles WHERE rolname = current_user")
            .fetch_one(self.pool())
            .await
            .map_err(|e| sql_error("read the admin role", e))
    }

    /// A connection of the admin to `database`, for statements that act
    /// inside it (schemas, tables). The caller closes it.
    ///
    /// The customer owns objects in that database: the connection looks up
    /// names in `pg_catalog` only, so no function or operator of theirs runs
    /// with the admin's rights, whatever search path the database sets.
    pub async fn connect_to(&self, database: &str) -> Result<PgConnection> {
        let options = self.options.clone().database(database);
        match tokio::time::timeout(self.acquire_timeout, PgConnection::connect_with(&options)).await
        {
            Ok(Ok(mut connection)) => {
                sqlx::raw_sql("SET search_path = pg_catalog, pg_temp")
                    .execute(&mut connection)
                    .await
                    .map_err(|e| sql_error("set the search path", e))?;
                Ok(connection)
            }
            Ok(Err(error)) => Err(sql_error("connect to the database", error)),
            Err(_) => Err(Error::unavailable(
                "postgres: connect to the database: timed out",
            )),
        }
    }

    /// What the server says about `database`; `None` when it does not
    /// exist.
    pub async fn database_info(&self, name: &str) -> Result<Option<DatabaseInfo>> {
        let row: Option<(String, bool, i32, bool)> = sqlx::query_as(
            "SELECT pg_get_userbyid(d.datdba)::text, d.datallowconn, d.datconnlimit, \
                    EXISTS (SELECT 1 FROM pg_db_role_setting s \
                            WHERE s.setdatabase = d.oid AND s.setrole = 0 \
                              AND 'default_transaction_read_only=on' = ANY (s.setconfig)) \
             FROM pg_database d WHERE d.datname = $1",
        )
        .bind(name)
        .fetch_optional(self.pool())
        .await
        .map_err(|e| sql_error("look up a database", e))?;
        Ok(row.map(
            |(owner, allows_connections, connection_limit, read_only_setting)| DatabaseInfo {
                owner,
                allows_connections,
                connection_limit,
                read_only_setting,
            },
        ))
    }

    /// Whether the admin role has CREATEDB and CREATEROLE.
    pub async fn admin_attributes(&self) -> Result<(bool, bool)> {
        sqlx::query_as(
            "SELECT rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user",
        )
        .fetch_one(self.pool())
        .await
        .map_err(|e| sql_error("read the admin role", e))
    }

    /// Databases any role may connect to (PUBLIC has CONNECT), quoted.
    pub async fn databases_open_to_public(&self) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT format('%I', datname) FROM pg_database \
             WHERE datallowconn AND has_database_privilege('public', oid, 'CONNECT') ORDER BY datname",
        )
        .fetch_all(self.pool())
        .await
        .map_err(|e| sql_error("read database privileges", e))
    }

    /// Names of the databases whose names start with `prefix`.
    pub async fn databases_starting_with(&self, prefix: &str) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT datname::text FROM pg_database WHERE left(datname, length($1)) = $1 ORDER BY 1",
        )
        .bind(prefix)
        .fetch_all(self.pool())
        .await
        .map_err(|e| sql_error("list databases", e))
    }

    /// True when `member` is a direct member of any of `roles`.
    pub async fn is_member(&self, roles: &[&str], member: &str) -> Result<bool> {
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_auth_members m \
                 JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member \
                 WHERE r.rolname = ANY($1) AND u.rolname = $2)",
        )
        .bind(roles)
        .bind(member)
        .fetch_one(self.pool())
        .await
        .map_err(|e| sql_error("read role memberships", e))
    }

    /// The attributes of `roles` no tenant role may have, as
    /// `(role, attribute)` pairs.
    pub async fn forbidden_attributes(&self, roles: &[&str]) -> Result<Vec<(String, String)>> {
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        let rows: Vec<(String, bool, bool, bool, bool, bool)> = sqlx::query_as(
            "SELECT rolname::text, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls \
             FROM pg_roles WHERE rolname = ANY($1) ORDER BY 1",
        )
        .bind(roles)
        .fetch_all(self.pool())
        .await
        .map_err(|e| sql_error("read role attributes", e))?;
        let mut found = Vec::new();
        for (role, superuser, createdb, createrole, replication, bypassrls) in rows {
            for (has, attribute) in [
                (superuser, "SUPERUSER"),
                (createdb, "CREATEDB"),
                (createrole, "CREATEROLE"),
                (replication, "REPLICATION"),
                (bypassrls, "BYPASSRLS"),
            ] {
                if has {
                    found.push((role.clone(), attribute.to_owned()));
                }
            }
        }
        Ok(found)
    }

    /// Creates a database owned by the admin role, unless it exists.
    pub async fn ensure_database(&self, name: &str) -> Result<()> {
        if self.database_exists(name).await? {
            return Ok(());
        }
        let sql = format!("CREATE DATABASE {}", quote_identifier(name)?);
        match self.run(sql).await {
            Ok(()) => Ok(()),
            Err(error) if is_code(&error, &[DUPLICATE_DATABASE, UNIQUE_VIOLATION]) => Ok(()),
            Err(error) => Err(sql_error("create the database", error)),
        }
    }

    /// Ends every session connected to `database`.
    pub async fn end_sessions(&self, database: &str) -> Result<()> {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(database)
        .execute(self.pool())
        .await
        .map_err(|e| sql_error("end the sessions of a database", e))?;
        Ok(())
    }

    /// Size, connections and state of `database`; `None` when it does not
    /// exist.
    pub async fn usage(&self, database: &str) -> Result<Option<DatabaseUsage>> {
        let row: Option<(i64, i64, bool)> = sqlx::query_as(
            "SELECT pg_database_size(d.oid), \
                    (SELECT count(*) FROM pg_stat_activity a WHERE a.datname = d.datname), \
                    d.datallowconn \
             FROM pg_database d WHERE d.datname = $1",
        )
        .bind(database)
        .fetch_optional(self.pool())
        .await
        .map_err(|e| sql_error("measure the database", e))?;
        Ok(
            row.map(|(size, connections, allows_connections)| DatabaseUsage {
                size_bytes: u64::try_from(size).unwrap_or(0),
                connections,
                allows_connections,
            }),
        )
    }

    /// Closes the pool, if it was opened.
    pub async fn close(&self) {
        if let Some(pool) = self.pool.get() {
            pool.close().await;
        }
    }
}
