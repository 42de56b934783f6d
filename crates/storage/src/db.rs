//! Connections: an embedded SQLite file by default, PostgreSQL when a
//! `postgres://` URL is given.

use marketbridge_core::Error;
use marketbridge_telemetry::transactions::OpenTransaction;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, ExecResult, QueryResult, RuntimeErr, SqlErr, Statement,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The database engines marketbridge runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The backend a URL points at.
    pub fn of_url(url: &str) -> Result<Self, Error> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(Error::validation(format!(
                "unsupported database URL `{}`",
                redact_url(url)
            )))
        }
    }

    /// The backend of an open connection.
    pub fn of(connection: &DatabaseConnection) -> Self {
        match connection.get_database_backend() {
            DbBackend::Postgres => Backend::Postgres,
            _ => Backend::Sqlite,
        }
    }
}

/// The URL with any password replaced, for logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Opens a connection pool. For SQLite the file's folder is created, and the
/// database runs in WAL mode so readers never wait for the writer.
pub async fn connect(url: &str) -> Result<DatabaseConnection, Error> {
    let backend = Backend::of_url(url)?;
    if backend == Backend::Sqlite {
        ensure_sqlite_folder(url)?;
    }
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5));
    match backend {
        Backend::Sqlite => {
            options
                .max_connections(8)
                .min_connections(1)
                .map_sqlx_sqlite_opts(|opts| {
                    opts.journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Normal)
                        .busy_timeout(Duration::from_secs(10))
                        .foreign_keys(true)
                });
        }
        Backend::Postgres => {
            options.max_connections(16).min_connections(1);
        }
    }
    let mut db = Database::connect(options).await.map_err(|e| {
        Error::unavailable(format!("cannot open database {}: {e}", redact_url(url)))
    })?;
    crate::testing::observe(&mut db);
    Ok(db)
}

/// One connection (a pool of one), so session state such as an advisory
/// lock applies to every statement sent through it.
async fn connect_one(url: &str) -> Result<DatabaseConnection, Error> {
    if Backend::of_url(url)? == Backend::Sqlite {
        return connect(url).await;
    }
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .max_connections(1)
        .min_connections(1)
        // Never swapped for a fresh session while migrating.
        .idle_timeout(None)
        .max_lifetime(None);
    Database::connect(options)
        .await
        .map_err(|e| Error::unavailable(format!("cannot open database {}: {e}", redact_url(url))))
}

fn ensure_sqlite_folder(url: &str) -> Result<(), Error> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(parent) = Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::unavailable(format!("cannot create {}: {e}", parent.display())))?;
    }
    Ok(())
}

/// Maps a database error: unique violations become conflicts, lost
/// connections become `unavailable`, anything else is internal.
pub fn db_error(error: DbErr) -> Error {
    if let Some(SqlErr::UniqueConstraintViolation(_)) = error.sql_err() {
        // The constraint's text names tables and columns: it stays in the
        // cause, for logs, and never reaches a caller.
        return Error::conflict("it already exists").with_source(error);
    }
    match &error {
        DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => {
            Error::unavailable("the database is unavailable").with_source(error)
        }
        DbErr::RecordNotFound(what) => Error::not_found(what.clone()).with_source(error),
        DbErr::Query(RuntimeErr::SqlxError(inner))
            if inner.to_string().contains("database is locked") =>
        {
            Error::unavailable("database busy, retry").with_source(error)
        }
        _ => Error::internal(format!("database error: {error}")).with_source(error),
    }
}

/// True when the error is a unique-constraint violation.
pub fn is_unique_violation(error: &DbErr) -> bool {
    matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// Key of the PostgreSQL advisory lock held while migrating ("mbmigrat").
/// Advisory locks belong to one database, so each service's database has
/// its own.
pub const MIGRATION_LOCK_KEY: i64 = 0x6d62_6d69_6772_6174;

/// Opens a pool on a migrated database. Migrations run first on a single
/// connection that is then closed, so no pooled connection ever holds a
/// schema from before the migrations (SQLite compiles statements against the
/// schema a connection last read).
///
/// On PostgreSQL that connection holds the advisory lock
/// [`MIGRATION_LOCK_KEY`] while it migrates, so replicas starting together
/// migrate one after the other: the first applies what is pending, the others
/// wait for it and then find nothing left to do.
pub async fn open_migrated<M: sea_orm_migration::MigratorTrait>(
    url: &str,
) -> Result<DatabaseConnection, Error> {
    let migrating = connect_one(url).await?;
    let locked = Backend::of(&migrating) == Backend::Postgres;
    if locked {
        use sea_orm::ConnectionTrait;
        migrating
            .execute_unprepared(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
            .await
            .map_err(|e| Error::unavailable(format!("cannot take the migration lock: {e}")))?;
    }
    let migrated = M::up(&migrating, None).await;
    if locked {
        // Closing the session below releases the lock too; unlocking first
        // lets a waiting replica go on at once.
        use sea_orm::ConnectionTrait;
        let _ = migrating
            .execute_unprepared(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
            .await;
    }
    migrated.map_err(|e| Error::internal(format!("migrations failed: {e}")))?;
    migrating
        .close()
        .await
        .map_err(|e| Error::internal(format!("closing the migration connection: {e}")))?;
    connect(url).await
}

/// Microsecond precision, the finest both backends store.
pub fn truncate_micros(time: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time)
}

/// How long a writer waits for its turn before it gives up with
/// `unavailable` (the same as SQLite's busy timeout, which still covers
/// writers in other processes).
const WRITE_WAIT: Duration = Duration::from_secs(10);

/// The write gates of this process's SQLite databases: by the file name a
/// pool was opened with, and by the file it resolves to (so two names of one
/// file share a gate). The name is resolved once, not at every write.
#[derive(Default)]
struct WriteGates {
    by_name: std::collections::HashMap<std::path::PathBuf, Arc<tokio::sync::Mutex<()>>>,
    by_file: std::collections::HashMap<std::path::PathBuf, Arc<tokio::sync::Mutex<()>>>,
}

static WRITE_GATES: std::sync::OnceLock<std::sync::Mutex<WriteGates>> = std::sync::OnceLock::new();

/// A writer's turn at a SQLite database: while it is held, no other writer of
/// this process writes to that file. `None` on PostgreSQL, whose writers
/// take row locks instead.
pub type WriteTurn = Option<tokio::sync::OwnedMutexGuard<()>>;

/// Waits for this writer's turn at `db` (see [`WriteTurn`]). SQLite has one
/// writer at a time; without the gate, writers of the same process wait for
/// each other inside SQLite's busy handler, which sleeps and retries (up to
/// 100 ms a sleep), so a queue of writers turns into sleeps. The gate is a
/// FIFO (`tokio::sync::Mutex`) shared by every pool of the process that
/// opened the same file: a writer waits on it, without polling, and starts
/// the moment the previous one commits. Writers in other processes still
/// meet SQLite's busy handler.
pub async fn write_gate(db: &DatabaseConnection) -> Result<WriteTurn, Error> {
    if Backend::of(db) != Backend::Sqlite {
        return Ok(None);
    }
    let options = db.get_sqlite_connection_pool().connect_options();
    let name = options.get_filename();
    let gate = {
        let mut gates = WRITE_GATES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match gates.by_name.get(name) {
            Some(gate) => gate.clone(),
            None => {
                let file = std::fs::canonicalize(name).unwrap_or_else(|_| name.to_path_buf());
                let gate = gates.by_file.entry(file).or_default().clone();
                gates.by_name.insert(name.to_path_buf(), gate.clone());
                gate
            }
        }
    };
    match tokio::time::timeout(WRITE_WAIT, gate.lock_owned()).await {
        Ok(turn) => Ok(Some(turn)),
        Err(_) => Err(Error::unavailable("database busy, retry")),
    }
}

/// Begins a transaction that will write. On SQLite it first waits for the
/// process's write gate of the file ([`write_gate`]), then takes the write
/// lock at once (`BEGIN IMMEDIATE`), so a transaction that reads then writes
/// waits for other writers instead of failing; on PostgreSQL it is a plain
/// `BEGIN`.
///
/// The transaction counts as open in the calling task until it commits, rolls
/// back or is dropped, so an outbound call made meanwhile is caught
/// (see `marketbridge_telemetry::transactions`).
pub async fn begin_write(db: &DatabaseConnection) -> Result<WriteTxn, Error> {
    use sea_orm::{SqliteTransactionMode, TransactionOptions, TransactionTrait};
    let turn = write_gate(db).await?;
    let txn = db
        .begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        })
        .await
        .map_err(db_error)?;
    Ok(WriteTxn {
        txn,
        _open: OpenTransaction::begin(),
        _turn: turn,
    })
}

/// A write transaction from [`begin_write`]; use it wherever a sea-orm
/// connection is expected. It holds the write gate until it ends.
#[derive(Debug)]
pub struct WriteTxn {
    // Fields drop in order: the transaction ends before the turn passes on.
    txn: DatabaseTransaction,
    _open: OpenTransaction,
    _turn: WriteTurn,
}

impl WriteTxn {
    /// Commits.
    pub async fn commit(self) -> Result<(), DbErr> {
        self.txn.commit().await
    }

    /// Rolls back.
    pub async fn rollback(self) -> Result<(), DbErr> {
        self.txn.rollback().await
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for WriteTxn {
    fn get_database_backend(&self) -> DbBackend {
        self.txn.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.txn.execute_raw(stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.txn.execute_unprepared(sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.txn.query_one_raw(stmt).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.txn.query_all_raw(stmt).await
    }

    fn support_returning(&self) -> bool {
        self.txn.support_returning()
    }

    fn is_mock_connection(&self) -> bool {
        self.txn.is_mock_connection()
    }
}
