//! Statements the `postgres` driver runs over its admin connection. Each
//! one is safe to run again: creating what exists, or dropping what is gone,
//! succeeds.

use super::names::{quote_identifier, quote_literal};
use marketbridge_core::{Error, Result};
use sea_orm::sqlx;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
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
    /// [`quote_literal`], and numbers.
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

    /// Lets `login` log in with the password behind `verifier`, as a member
    /// of `owner` whose sessions act as `owner` (so what they create belongs
    /// to the owner, whichever login made it).
    pub async fn enable_login(&self, login: &str, owner: &str, verifier: &str) -> Result<()> {
        self.ensure_role(login).await?;
        let login_sql = quote_identifier(login)?;
        let owner_sql = quote_identifier(owner)?;
        self.execute(
            "enable a login",
            &format!(
                "ALTER ROLE {login_sql} WITH LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}",
                quote_literal(verifier)?
            ),
        )
        .await?;
        self.execute(
            "grant the owner role",
            &format!("GRANT {owner_sql} TO {login_sql}"),
        )
        .await?;
        self.execute(
            "make sessions act as the owner",
            &format!(
                "ALTER ROLE {login_sql} SET role = {}",
                quote_literal(owner)?
            ),
        )
        .await
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
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1")
            .bind(login)
            .execute(self.pool())
            .await
            .map_err(|e| sql_error("end the sessions of a login", e))?;
        Ok(())
    }

    /// Creates a database owned by `owner`, or hands an existing one to it.
    pub async fn ensure_database(&self, name: &str, owner: &str) -> Result<()> {
        let database_sql = quote_identifier(name)?;
        let owner_sql = quote_identifier(owner)?;
        if !self.database_exists(name).await? {
            let sql = format!("CREATE DATABASE {database_sql} OWNER {owner_sql}");
            match self.run(sql).await {
                Ok(()) => return Ok(()),
                Err(error) if is_code(&error, &[DUPLICATE_DATABASE, UNIQUE_VIOLATION]) => {}
                Err(error) => return Err(sql_error("create the database", error)),
            }
        }
        self.execute(
            "hand the database to its owner",
            &format!("ALTER DATABASE {database_sql} OWNER TO {owner_sql}"),
        )
        .await
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

    /// True when new sessions of `database` start read-only.
    pub async fn is_read_only(&self, database: &str) -> Result<bool> {
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase \
             WHERE d.datname = $1 AND s.setrole = 0 \
               AND 'default_transaction_read_only=on' = ANY (s.setconfig)",
        )
        .bind(database)
        .fetch_optional(self.pool())
        .await
        .map_err(|e| sql_error("read the database settings", e))?;
        Ok(found.is_some())
    }

    /// Closes the pool, if it was opened.
    pub async fn close(&self) {
        if let Some(pool) = self.pool.get() {
            pool.close().await;
        }
    }
}
