//! The role layout of a resource, applied idempotently (see "postgres
//! driver role layout" in ARCHITECTURE.md):
//!
//! - the **database** belongs to the admin role, so its settings (connection
//!   limit, `ALLOW_CONNECTIONS`, comment, per-database settings) are the
//!   provider's alone; PUBLIC has no privilege on it;
//! - the **owner** role (cannot log in) has CONNECT and TEMPORARY on it,
//!   USAGE and CREATE on `public`, and owns everything the customer creates;
//! - the **reader** role (cannot log in) may read the owner's tables and
//!   sequences; it is what the logins get over the storage quota;
//! - the two **login** roles (NOINHERIT, no attribute but LOGIN, a
//!   connection limit) have CONNECT only, are members of the owner role and
//!   start their sessions as it (`SET role`); over the quota they are
//!   members of the reader role instead and start as it;
//! - the admin role is a member of the owner, reader and login roles, so it
//!   can grant and revoke on the customer's objects, take back what the
//!   others own, and end their sessions.
//!
//! Nothing the customer's roles own or may alter carries a limit: the
//! database and the role attributes are the admin's, and the quota is a
//! matter of role membership, which only the admin grants.

use super::admin::{Admin, DatabaseInfo, execute_on};
use super::names::{ResourceNames, Slot, quote_identifier, quote_literal};
use marketbridge_core::{Error, Result};
use sea_orm::sqlx;
use sqlx::Connection;

/// What the customer's connections are allowed: the plan's connection limit
/// and whether the database is over its storage quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most connections, to the database and per login (-1: none).
    pub connection_limit: i64,
    /// `Some(true)` over the quota, `Some(false)` within it, `None` to
    /// keep what the server holds now.
    pub over_quota: Option<bool>,
}

/// The layout of one resource's database and roles.
pub struct Layout<'a> {
    admin: &'a Admin,
    names: &'a ResourceNames,
}

/// The quoted names of a resource, ready for statements.
struct Quoted {
    database: String,
    owner: String,
    reader: String,
    logins: [String; 2],
}

impl<'a> Layout<'a> {
    /// The layout of `names` on the admin's server.
    pub fn new(admin: &'a Admin, names: &'a ResourceNames) -> Self {
        Self { admin, names }
    }

    fn quoted(&self) -> Result<Quoted> {
        Ok(Quoted {
            database: quote_identifier(&self.names.database)?,
            owner: quote_identifier(&self.names.owner)?,
            reader: quote_identifier(&self.names.reader)?,
            logins: [
                quote_identifier(&self.names.logins[0])?,
                quote_identifier(&self.names.logins[1])?,
            ],
        })
    }

    fn logins(&self) -> [&str; 2] {
        [&self.names.logins[0], &self.names.logins[1]]
    }

    /// True when the logins have the reader role (over the storage quota).
    pub async fn is_over_quota(&self) -> Result<bool> {
        for login in self.logins() {
            if self.admin.is_member(&[&self.names.reader], login).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Creates or repairs the roles and the database. Roles created here
    /// cannot log in; [`Layout::enable_login`] lets one in. Returns the
    /// database as it was before (`None`: created now).
    pub async fn apply(&self, limits: Limits) -> Result<Option<DatabaseInfo>> {
        let q = self.quoted()?;
        let (admin_role, admin_is_superuser) = self.admin.identity().await?;
        let admin_role = quote_identifier(&admin_role)?;
        for role in self.names.all() {
            self.admin.ensure_role(role).await?;
        }
        self.check_attributes(admin_is_superuser).await?;
        let limit = limits.connection_limit.max(-1);
        self.admin
            .execute(
                "set the role attributes",
                &format!(
                    "ALTER ROLE {owner} WITH NOLOGIN; ALTER ROLE {reader} WITH NOLOGIN; \
                     ALTER ROLE {a} WITH NOINHERIT CONNECTION LIMIT {limit}; \
                     ALTER ROLE {b} WITH NOINHERIT CONNECTION LIMIT {limit}",
                    owner = q.owner,
                    reader = q.reader,
                    a = q.logins[0],
                    b = q.logins[1],
                ),
            )
            .await?;
        if !admin_is_superuser {
            // To grant and revoke on what the owner owns, to take the
            // database of the first layout from the owner, and to end the
            // logins' sessions.
            self.admin
                .execute(
                    "make the admin a member of the resource roles",
                    &format!(
                        "GRANT {}, {}, {}, {} TO {admin_role}",
                        q.owner, q.reader, q.logins[0], q.logins[1]
                    ),
                )
                .await?;
        }
        let before = self.admin.database_info(&self.names.database).await?;
        self.admin.ensure_database(&self.names.database).await?;
        if before.as_ref().is_some_and(|info| {
            quote_identifier(&info.owner).ok().as_deref() != Some(admin_role.as_str())
        }) {
            self.admin
                .execute(
                    "take the database from the customer's roles",
                    &format!("ALTER DATABASE {} OWNER TO {admin_role}", q.database),
                )
                .await?;
        }
        let comment = quote_literal(&self.names.resource_id)?;
        self.admin
            .execute(
                "set the database privileges and limits",
                &format!(
                    "REVOKE ALL ON DATABASE {db} FROM PUBLIC; \
                     REVOKE CREATE ON DATABASE {db} FROM {owner}; \
                     REVOKE CREATE, TEMPORARY ON DATABASE {db} FROM {reader}, {a}, {b}; \
                     GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {owner}; \
                     GRANT CONNECT ON DATABASE {db} TO {a}, {b}; \
                     ALTER DATABASE {db} WITH CONNECTION LIMIT {limit}; \
                     COMMENT ON DATABASE {db} IS {comment}",
                    db = q.database,
                    owner = q.owner,
                    reader = q.reader,
                    a = q.logins[0],
                    b = q.logins[1],
                ),
            )
            .await?;
        let was_read_only = before.as_ref().is_some_and(|info| info.read_only_setting);
        if was_read_only {
            // The first layout's quota, which the customer could lift.
            self.admin
                .execute(
                    "drop the old quota setting",
                    &format!(
                        "ALTER DATABASE {} RESET default_transaction_read_only",
                        q.database
                    ),
                )
                .await?;
        }
        self.inside(
            "give the owner the public schema and the logins' objects",
            &format!(
                "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'public') THEN \
                   GRANT USAGE, CREATE ON SCHEMA public TO {owner}; END IF; END $$; \
                 REASSIGN OWNED BY {a}, {b}, {reader} TO {owner}",
                owner = q.owner,
                reader = q.reader,
                a = q.logins[0],
                b = q.logins[1],
            ),
        )
        .await?;
        let over_quota = match limits.over_quota {
            Some(over) => over,
            None => was_read_only || self.is_over_quota().await?,
        };
        self.apply_quota(over_quota).await?;
        Ok(before)
    }

    /// Refuses roles with attributes a tenant must not have, removing those
    /// the admin may remove.
    async fn check_attributes(&self, admin_is_superuser: bool) -> Result<()> {
        let found = self.admin.forbidden_attributes(&self.names.all()).await?;
        for (role, attribute) in found {
            let removable = matches!(attribute.as_str(), "CREATEDB" | "CREATEROLE");
            if !removable && !admin_is_superuser {
                return Err(Error::unprocessable(format!(
                    "postgres: role {role} has {attribute}, which only a superuser can remove"
                )));
            }
            self.admin
                .execute(
                    "remove a role attribute",
                    &format!("ALTER ROLE {} WITH NO{attribute}", quote_identifier(&role)?),
                )
                .await?;
        }
        Ok(())
    }

    /// Runs `sql` inside the resource's database as the admin.
    async fn inside(&self, action: &str, sql: &str) -> Result<()> {
        let (mut connection, reopened) = self.open_inside().await?;
        let result = execute_on(&mut connection, action, sql).await;
        self.close_inside(connection, reopened).await?;
        result
    }

    /// An admin connection inside the database. A database that refuses
    /// connections (suspended) accepts them for the admin's work only: its
    /// logins are made unable to log in first; the `true` says so, for
    /// [`Layout::close_inside`].
    async fn open_inside(&self) -> Result<(sqlx::PgConnection, bool)> {
        let refuses = self
            .admin
            .database_info(&self.names.database)
            .await?
            .is_some_and(|info| !info.allows_connections);
        if refuses {
            self.disable_logins().await?;
            self.set_allow_connections(true).await?;
        }
        match self.admin.connect_to(&self.names.database).await {
            Ok(connection) => Ok((connection, refuses)),
            Err(error) => {
                if refuses {
                    self.set_allow_connections(false).await?;
                }
                Err(error)
            }
        }
    }

    async fn close_inside(&self, connection: sqlx::PgConnection, reopened: bool) -> Result<()> {
        let _ = connection.close().await;
        if reopened {
            self.set_allow_connections(false).await?;
            self.admin.end_sessions(&self.names.database).await?;
        }
        Ok(())
    }

    async fn set_allow_connections(&self, allowed: bool) -> Result<()> {
        self.admin
            .execute(
                "allow or refuse connections",
                &format!(
                    "ALTER DATABASE {} WITH ALLOW_CONNECTIONS {allowed}",
                    quote_identifier(&self.names.database)?
                ),
            )
            .await
    }

    async fn disable_logins(&self) -> Result<()> {
        for login in self.logins() {
            if self.admin.role_exists(login).await? {
                self.admin
                    .execute(
                        "disable a login",
                        &format!("ALTER ROLE {} WITH NOLOGIN", quote_identifier(login)?),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Gives the logins the owner role (within the quota) or the reader
    /// role (over it), and ends their sessions when that changed.
    pub async fn apply_quota(&self, over_quota: bool) -> Result<()> {
        let q = self.quoted()?;
        let changed = self.is_over_quota().await? != over_quota;
        if over_quota {
            // First what the logins may become, then their sessions, then
            // what the reader may do in the database.
            self.memberships(&q, true).await?;
            self.admin.end_sessions(&self.names.database).await?;
            self.freeze(&q).await?;
        } else {
            self.memberships(&q, false).await?;
        }
        if changed {
            self.admin.end_sessions(&self.names.database).await?;
        }
        Ok(())
    }

    async fn memberships(&self, q: &Quoted, over_quota: bool) -> Result<()> {
        let (grant, revoke) = if over_quota {
            (&q.reader, &q.owner)
        } else {
            (&q.owner, &q.reader)
        };
        let role_literal = quote_literal(if over_quota {
            &self.names.reader
        } else {
            &self.names.owner
        })?;
        let read_only = if over_quota {
            "SET default_transaction_read_only = on"
        } else {
            "RESET default_transaction_read_only"
        };
        for login in &q.logins {
            self.admin
                .execute(
                    "set what a login acts as",
                    &format!(
                        "REVOKE {revoke} FROM {login}; GRANT {grant} TO {login}; \
                         ALTER ROLE {login} SET role = {role_literal}; \
                         ALTER ROLE {login} {read_only}"
                    ),
                )
                .await?;
        }
        Ok(())
    }

    /// Over the quota: nobody but the owner may write the owner's objects
    /// (privileges the customer granted to PUBLIC or to the logins are
    /// revoked, and security-definer routines may not be run by them), and
    /// the reader may read its tables and sequences.
    async fn freeze(&self, q: &Quoted) -> Result<()> {
        let (mut connection, reopened) = self.open_inside().await?;
        let result = async {
            // Names come back quoted by the server (format's %I, regclass
            // and regprocedure output).
            let objects: Vec<(String, String)> = sqlx::query_as(
                "SELECT 'SCHEMA', format('%I', n.nspname) FROM pg_namespace n \
                   WHERE (n.nspowner = $1::regrole OR n.nspname = 'public') \
                 UNION ALL \
                 SELECT CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, c.oid::regclass::text \
                   FROM pg_class c WHERE c.relowner = $1::regrole AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') \
                 UNION ALL \
                 SELECT 'ROUTINE', p.oid::regprocedure::text FROM pg_proc p \
                   WHERE p.proowner = $1::regrole AND p.prosecdef AND p.prokind IN ('f', 'p')",
            )
            .bind(&self.names.owner)
            .fetch_all(&mut connection)
            .await
            .map_err(|e| super::admin::sql_error("list the customer's objects", e))?;
            let others = format!("PUBLIC, {}, {}, {}", q.reader, q.logins[0], q.logins[1]);
            let mut statements = Vec::new();
            for (kind, name) in objects {
                match kind.as_str() {
                    "SCHEMA" => {
                        statements.push(format!("REVOKE CREATE ON SCHEMA {name} FROM {others}"));
                        statements.push(format!("GRANT USAGE ON SCHEMA {name} TO {}", q.reader));
                    }
                    "ROUTINE" => {
                        statements.push(format!("REVOKE ALL ON ROUTINE {name} FROM {others} CASCADE"));
                    }
                    _ => {
                        statements.push(format!("REVOKE ALL ON {kind} {name} FROM {others} CASCADE"));
                        statements.push(format!("GRANT SELECT ON {kind} {name} TO {}", q.reader));
                    }
                }
            }
            for chunk in statements.chunks(200) {
                execute_on(&mut connection, "take write privileges away", &chunk.join("; ")).await?;
            }
            Ok(())
        }
        .await;
        self.close_inside(connection, reopened).await?;
        result
    }

    /// Sets the password of `slot`'s login (a SCRAM verifier) and lets it
    /// log in, unless the database refuses connections (suspended or
    /// deleted): then it stays unable to.
    pub async fn enable_login(&self, slot: Slot, verifier: &str) -> Result<()> {
        let login = quote_identifier(self.names.login(slot))?;
        let allowed = self
            .admin
            .database_info(&self.names.database)
            .await?
            .is_none_or(|info| info.allows_connections);
        let can_login = if allowed { "LOGIN" } else { "NOLOGIN" };
        self.admin
            .execute(
                "enable a login",
                &format!(
                    "ALTER ROLE {login} WITH {can_login} PASSWORD {}",
                    quote_literal(verifier)?
                ),
            )
            .await
    }

    /// Suspension and deletion: no login may log in, the database refuses
    /// connections, and every session of the resource ends.
    pub async fn suspend(&self) -> Result<()> {
        self.disable_logins().await?;
        if self.admin.database_exists(&self.names.database).await? {
            self.set_allow_connections(false).await?;
            self.admin.end_sessions(&self.names.database).await?;
        }
        self.admin.end_login_sessions(&self.logins()).await
    }

    /// Resumption: the database accepts connections and the login of `slot`
    /// may log in again.
    pub async fn resume(&self, slot: Slot) -> Result<()> {
        if self.admin.database_exists(&self.names.database).await? {
            self.set_allow_connections(true).await?;
        }
        let login = self.names.login(slot);
        if self.admin.role_exists(login).await? {
            self.admin
                .execute(
                    "enable a login",
                    &format!("ALTER ROLE {} WITH LOGIN", quote_identifier(login)?),
                )
                .await?;
        }
        Ok(())
    }
}
