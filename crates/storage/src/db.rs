//! Connections: an embedded SQLite file by default, PostgreSQL when a
//! `postgres://` URL is given.

use marketbridge_core::Error;
use marketbridge_telemetry::transactions::OpenTransaction;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, ExecResult, QueryResult, RuntimeErr, SqlErr, Statement,
};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

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

/// A pooled PostgreSQL connection idle at least this long is pinged before
/// it is handed out (one that fails is replaced by a fresh one).
pub const PING_IF_IDLE_FOR: Duration = Duration::from_secs(10);

/// Opens a connection pool. For SQLite the file's folder is created, and the
/// database runs in WAL mode so readers never wait for the writer, with
/// `synchronous = FULL`: a commit is fsynced before it returns, so an
/// acknowledged write survives a power loss or an OS crash (writers share
/// that fsync through group commits, see [`begin_write`]).
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
                // A connection to a local file cannot be dropped by anyone:
                // no ping at checkout (on SQLite a ping is a round trip to
                // the connection's thread, as much as a statement).
                .test_before_acquire(false)
                .map_sqlx_sqlite_opts(|opts| {
                    opts.journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Full)
                        .busy_timeout(Duration::from_secs(10))
                        .foreign_keys(true)
                        // Temporary storage, including the journal of each
                        // savepoint a group commit opens per writer, stays
                        // in memory: by default a group's savepoint journal
                        // past 64 KiB spilled to a temporary file, created,
                        // written and deleted once per group.
                        .pragma("temp_store", "memory")
                });
        }
        Backend::Postgres => {
            options
                .max_connections(16)
                .min_connections(1)
                // Only a connection idle long enough to have been dropped
                // by the server, a proxy or a firewall is pinged at
                // checkout; a busy one goes straight to its statement
                // instead of paying a round trip first.
                .test_before_acquire_if_idle_for(PING_IF_IDLE_FOR);
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
///
/// On SQLite it is the migrating connection: its commits are not fsynced one
/// by one (`synchronous = NORMAL`, still atomic), since a migration lost to a
/// power cut is simply applied again at the next start; closing it
/// checkpoints the file before the pool, fully synchronous, opens.
async fn connect_one(url: &str) -> Result<DatabaseConnection, Error> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .max_connections(1)
        .min_connections(1);
    if Backend::of_url(url)? == Backend::Sqlite {
        ensure_sqlite_folder(url)?;
        options.map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
        let mut db = Database::connect(options).await.map_err(|e| {
            Error::unavailable(format!("cannot open database {}: {e}", redact_url(url)))
        })?;
        crate::testing::observe(&mut db);
        return Ok(db);
    }
    options
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
        DbErr::Query(RuntimeErr::SqlxError(inner)) | DbErr::Exec(RuntimeErr::SqlxError(inner))
            if connection_lost(inner) =>
        {
            Error::unavailable("the database connection was lost, retry").with_source(error)
        }
        _ => Error::internal(format!("database error: {error}")).with_source(error),
    }
}

/// The connection went away under a statement: the socket closed, or the
/// server ended the session (SQLSTATE class 08, connection exception; 57P01
/// to 57P03, shut down by an operator, a crash or a start-up in progress).
/// Whether the statement took effect is unknown (a commit may have), so
/// callers answer `unavailable` and the client retries with the same
/// idempotency key.
fn connection_lost(error: &sea_orm::SqlxError) -> bool {
    use sea_orm::SqlxError;
    match error {
        SqlxError::Io(_) | SqlxError::WorkerCrashed => true,
        SqlxError::Database(database) => database.code().is_some_and(|code| {
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")
        }),
        _ => false,
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
        // As on SQLite: each migration stays atomic, but its commit does not
        // wait for the WAL flush (a migration lost to a crash is applied again
        // at the next start). The pool's sessions keep the server's setting.
        migrating
            .execute_unprepared("SET synchronous_commit = off")
            .await
            .map_err(|e| Error::unavailable(format!("cannot prepare migrating: {e}")))?;
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

/// How long a writer waits for its turn, or for the group commit holding its
/// writes, before it gives up with `unavailable` (the same as SQLite's busy
/// timeout, which still covers writers in other processes).
const WRITE_WAIT: Duration = Duration::from_secs(10);

/// Most writers one SQLite group commit holds; the writer that fills a group
/// commits it even while others wait.
const GROUP_MAX_WRITERS: usize = 64;

/// Age after which a SQLite group of two writers or more commits even while
/// writers wait, so a steady queue of writers does not delay the first one's
/// answer for long. (A group of one waits for a second writer however long
/// the first took: committing it alone would save no one any time.)
const GROUP_MAX_AGE: Duration = Duration::from_millis(2);

/// The write gates of this process's SQLite databases: by the file name a
/// pool was opened with, and by the file it resolves to (so two names of one
/// file share a gate). The name is resolved once, not at every write.
#[derive(Default)]
struct WriteGates {
    by_name: std::collections::HashMap<std::path::PathBuf, Arc<Gate>>,
    by_file: std::collections::HashMap<std::path::PathBuf, Arc<Gate>>,
}

static WRITE_GATES: std::sync::OnceLock<std::sync::Mutex<WriteGates>> = std::sync::OnceLock::new();

/// One SQLite file's write gate: whose turn it is to write, the writers
/// waiting for theirs (first come, first served), and how many group
/// commits it made.
#[derive(Default)]
struct Gate {
    state: std::sync::Mutex<GateState>,
    group_commits: AtomicU64,
    /// The connection each pool's group commits on this file begin on (see
    /// [`GroupConnection`]).
    writers: std::sync::Mutex<Vec<GroupConnection>>,
}

/// A pool's own connection for its group commits on a SQLite file, opened at
/// its first write with the pool's options (so with its `synchronous`
/// setting), and closed once that pool is gone.
///
/// Why one: in WAL mode a connection drops its whole page cache whenever
/// another connection wrote since its last transaction. Group commits begun on
/// any connection of the pool left every connection's cache cold, so each
/// write read the pages of every tree it changed again from the operating
/// system, one `pread` a page, more pages as the tables grew. As the only
/// connection of its pool that writes, this one keeps its cache.
struct GroupConnection {
    /// The options of the pool it writes for: alive as long as that pool.
    pool: std::sync::Weak<sea_orm::sqlx::sqlite::SqliteConnectOptions>,
    connection: DatabaseConnection,
}

#[derive(Default)]
struct GateState {
    /// A writer (or a group's commit) holds the turn.
    held: bool,
    /// The writers waiting for the turn, first come first served. A waiter
    /// that gave up (timed out, or was cancelled) is skipped when the turn
    /// comes to it.
    queue: VecDeque<oneshot::Sender<Turn>>,
    /// Short writers waiting ([`write_once`]: a statement or two, no code of
    /// the caller's in between), served before `queue`: each holds the turn
    /// for one statement, so the writers behind it barely wait, while behind
    /// a queue of long writers it would wait for all of them. Outbox claims
    /// and completions are such writes: without this, a worker's jobs wait
    /// behind every request being answered and a backlog builds.
    short: VecDeque<oneshot::Sender<Turn>>,
}

impl GateState {
    fn next_waiter(&mut self) -> Option<oneshot::Sender<Turn>> {
        self.short.pop_front().or_else(|| self.queue.pop_front())
    }
}

impl Gate {
    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The group commit in progress on a SQLite file: the writers' connection in a
/// `BEGIN IMMEDIATE` transaction, holding the writes of every writer whose
/// savepoint was released into it since it began.
struct Group {
    txn: DatabaseTransaction,
    started: Instant,
    /// Writers whose writes it holds (released savepoints).
    writers: usize,
    /// A savepoint could not be begun, released or rolled back: the group's
    /// transaction may be gone, so it is rolled back and every writer in it
    /// fails.
    broken: bool,
    /// The group's outcome, for the writers waiting for it: `None` until it
    /// committed (`Ok`) or failed (`Err`, the reason).
    outcome: watch::Sender<Option<Result<(), String>>>,
}

impl Group {
    fn full(&self) -> bool {
        self.broken
            || self.writers >= GROUP_MAX_WRITERS
            || (self.writers >= 2 && self.started.elapsed() >= GROUP_MAX_AGE)
    }
}

/// A writer's turn at a SQLite database's write gate (see [`write_gate`]):
/// while it is held no other writer of this process writes to that file.
/// Dropping it passes the turn on, with the open group commit if any, to the
/// next waiting writer; with none waiting, the group commits.
pub struct Turn(Option<TurnInner>);

struct TurnInner {
    gate: Arc<Gate>,
    group: Option<Group>,
}

impl std::fmt::Debug for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Turn")
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            inner.pass();
        }
    }
}

impl TurnInner {
    /// Passes the turn on: to the next waiting writer, with the group still
    /// open, unless the group is full; otherwise the group commits (in a task
    /// of its own, so a cancelled writer cannot leave it half done) and the
    /// turn passes on after.
    fn pass(mut self) {
        let must_commit = self.group.as_ref().is_some_and(Group::full);
        if !must_commit {
            let gate = self.gate.clone();
            let mut state = gate.state();
            while let Some(waiter) = state.next_waiter() {
                match waiter.send(Turn(Some(self))) {
                    Ok(()) => return,
                    Err(mut back) => match back.0.take() {
                        Some(inner) => self = inner,
                        None => return,
                    },
                }
            }
            if self.group.is_none() {
                state.held = false;
                return;
            }
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                end_group_in_task(&runtime, self);
            }
            Err(_) => self.abandon_group(),
        }
    }

    /// No runtime left to commit on (the process is ending): the group is
    /// dropped, which rolls it back, its writers learn that it ended without
    /// a commit, and the turn passes on.
    fn abandon_group(mut self) {
        self.group = None;
        self.pass();
    }
}

/// Commits the group `inner` holds in a task of its own, then passes the
/// turn on (the task's output, for a caller that wants the turn itself).
fn end_group_in_task(
    runtime: &tokio::runtime::Handle,
    inner: TurnInner,
) -> tokio::task::JoinHandle<Option<Turn>> {
    let unstarted = Unstarted(Some(inner));
    runtime.spawn(async move {
        let mut unstarted = unstarted;
        match unstarted.0.take() {
            Some(inner) => Some(Turn(Some(inner)).end_group().await),
            None => None,
        }
    })
}

/// A group commit's task that has not started yet. A runtime shutting down
/// drops a task it is given without running it: the group is then
/// abandoned here rather than by dropping a [`Turn`], whose drop would hand
/// the group to a new task, dropped at once in turn, and so on until the
/// stack runs out.
struct Unstarted(Option<TurnInner>);

impl Drop for Unstarted {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            inner.abandon_group();
        }
    }
}

impl Turn {
    /// Commits the open group (rolls it back if it is broken or holds no
    /// writes), tells its writers how it went, and returns the turn. Should
    /// this be stopped half way (its runtime shutting down), the turn still
    /// passes on and the group's writers learn it was abandoned.
    async fn end_group(mut self) -> Turn {
        let Some(inner) = self.0.as_mut() else {
            return self;
        };
        let Some(group) = inner.group.take() else {
            return self;
        };
        let gate = inner.gate.clone();
        let Group {
            txn,
            writers,
            broken,
            outcome,
            ..
        } = group;
        let result = if broken {
            drop(txn.rollback().await);
            Err("a write in the group failed, the group was rolled back".to_owned())
        } else if writers == 0 {
            drop(txn.rollback().await);
            Ok(())
        } else {
            let committed = txn.commit().await.map_err(|e| e.to_string());
            if committed.is_ok() {
                gate.group_commits.fetch_add(1, Ordering::Relaxed);
            }
            committed
        };
        if let Err(reason) = &result {
            tracing::error!(writers, reason = %reason, "a SQLite group commit failed; none of its writes were acknowledged");
        }
        outcome.send_replace(Some(result));
        self
    }
}

/// The connection `db`'s group commits on `gate`'s file begin on (see
/// [`GroupConnection`]), opened the first time. Called by the writer holding
/// the turn, so no two open one at once. Those of pools gone since are closed.
async fn writer_of(gate: &Gate, db: &DatabaseConnection) -> Result<DatabaseConnection, Error> {
    let options = db.get_sqlite_connection_pool().connect_options();
    let (found, gone) = {
        let mut writers = gate.writers.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<GroupConnection> = writers
            .extract_if(.., |writer| writer.pool.strong_count() == 0)
            .collect();
        let found = writers
            .iter()
            .find(|writer| std::ptr::eq(writer.pool.as_ptr(), Arc::as_ptr(&options)))
            .map(|writer| writer.connection.clone());
        (found, gone)
    };
    for writer in gone {
        drop(writer.connection.close().await);
    }
    if let Some(connection) = found {
        return Ok(connection);
    }
    let connection = open_writer(&options).await?;
    gate.writers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(GroupConnection {
            pool: Arc::downgrade(&options),
            connection: connection.clone(),
        });
    Ok(connection)
}

/// One connection, a pool of one, opened with `options`.
async fn open_writer(
    options: &sea_orm::sqlx::sqlite::SqliteConnectOptions,
) -> Result<DatabaseConnection, Error> {
    let pool = sea_orm::sqlx::pool::PoolOptions::<sea_orm::sqlx::Sqlite>::new()
        .max_connections(1)
        .min_connections(1)
        .test_before_acquire(false)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(WRITE_WAIT)
        .connect_with(options.clone())
        .await
        .map_err(|e| Error::unavailable(format!("cannot open the SQLite writer: {e}")))?;
    let mut writer = sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(pool);
    crate::testing::observe(&mut writer);
    Ok(writer)
}

/// A writer's turn at a SQLite database, from [`write_gate`]; `None` on
/// PostgreSQL, whose writers take row locks instead.
pub type WriteTurn = Option<Turn>;

/// The gate of `db`'s SQLite file; `None` on PostgreSQL.
fn gate_of(db: &DatabaseConnection) -> Option<Arc<Gate>> {
    if Backend::of(db) != Backend::Sqlite {
        return None;
    }
    let options = db.get_sqlite_connection_pool().connect_options();
    let name = options.get_filename();
    let mut gates = WRITE_GATES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    Some(match gates.by_name.get(name) {
        Some(gate) => gate.clone(),
        None => {
            let file = std::fs::canonicalize(name).unwrap_or_else(|_| name.to_path_buf());
            let gate = gates.by_file.entry(file).or_default().clone();
            gates.by_name.insert(name.to_path_buf(), gate.clone());
            gate
        }
    })
}

/// Waits for the turn at `gate`, first come first served among writers of
/// its length (short ones first, see [`GateState::short`]), for at most
/// [`WRITE_WAIT`].
async fn take_turn(gate: &Arc<Gate>, short: bool) -> Result<TurnInner, Error> {
    let receiver = {
        let mut state = gate.state();
        if !state.held {
            state.held = true;
            return Ok(TurnInner {
                gate: gate.clone(),
                group: None,
            });
        }
        let (sender, receiver) = oneshot::channel();
        if short {
            state.short.push_back(sender);
        } else {
            state.queue.push_back(sender);
        }
        receiver
    };
    match tokio::time::timeout(WRITE_WAIT, receiver).await {
        Ok(Ok(mut turn)) => match turn.0.take() {
            Some(inner) => Ok(inner),
            None => Err(Error::unavailable("database busy, retry")),
        },
        // Timed out: the turn, if it comes, goes to the next writer.
        _ => Err(Error::unavailable("database busy, retry")),
    }
}

/// How many group commits this process made on `db`'s SQLite file (each is
/// one `COMMIT`, one fsync, for every writer in the group); `None` on
/// PostgreSQL. For tests and diagnostics.
pub fn sqlite_group_commits(db: &DatabaseConnection) -> Option<u64> {
    gate_of(db).map(|gate| gate.group_commits.load(Ordering::Relaxed))
}

/// How many writers wait for their turn at `db`'s SQLite file (a writer that
/// gave up is counted until the turn reaches its place); `None` on
/// PostgreSQL. For tests and diagnostics.
pub fn sqlite_writers_waiting(db: &DatabaseConnection) -> Option<usize> {
    gate_of(db).map(|gate| {
        let state = gate.state();
        state.queue.len() + state.short.len()
    })
}

/// Waits for the turn at `db`'s SQLite file and has nothing of this process
/// write to it until the turn is dropped: a group commit in progress commits
/// first, so the turn's holder may write on the pool itself (each statement
/// then commits on its own). `None` on PostgreSQL. Writers use
/// [`begin_write`] or [`write_once`], which share the turn with the other
/// writers of a group commit; this is for the rare holder that must have the
/// file to itself.
///
/// Why a gate: SQLite has one writer at a time; without it, writers of the
/// same process wait for each other inside SQLite's busy handler, which
/// sleeps and retries (up to 100 ms a sleep), so a queue of writers turns
/// into sleeps. The gate is a FIFO (short writes first) shared by every pool
/// of the process that opened the same file: a writer waits on it, without
/// polling, and starts the moment the previous one is done. Writers in other processes still
/// meet SQLite's busy handler.
pub async fn write_gate(db: &DatabaseConnection) -> Result<WriteTurn, Error> {
    let Some(gate) = gate_of(db) else {
        return Ok(None);
    };
    let inner = take_turn(&gate, false).await?;
    if inner.group.is_none() {
        return Ok(Some(Turn(Some(inner))));
    }
    // The group commits in a task of its own; if this caller goes away
    // meanwhile, the turn passes on when that task ends.
    let turn = end_group_in_task(&tokio::runtime::Handle::current(), inner)
        .await
        .map_err(|e| Error::internal(format!("the group commit stopped: {e}")))?
        .ok_or_else(|| Error::unavailable("the group commit stopped: shutting down"))?;
    Ok(Some(turn))
}

/// Begins a transaction that will write.
///
/// On SQLite the writes are durable (`synchronous = FULL`) and grouped: the
/// writer waits for its turn at the file's write gate ([`write_gate`]), then
/// runs as a savepoint inside the open group commit, one `BEGIN IMMEDIATE`
/// transaction on the connection the pool keeps for its writes alone,
/// which keeps its page cache (begun by the group's first writer).
/// [`WriteTxn::commit`] releases the savepoint and passes the turn on; the
/// writer that finds nobody waiting (or fills the group: 64 writers,
/// or 2 ms since it began) commits the group, one fsync for all, and every
/// writer's `commit` returns once the group holding its writes committed.
/// A writer that rolls back, fails or is dropped undoes only its own
/// savepoint. On PostgreSQL it is a plain `BEGIN`.
///
/// The transaction counts as open in the calling task until it commits, rolls
/// back or is dropped, so an outbound call made meanwhile is caught
/// (see `marketbridge_telemetry::transactions`).
pub async fn begin_write(db: &DatabaseConnection) -> Result<WriteTxn, Error> {
    begin(db, Writer::Transaction).await
}

/// Who begins a write: a transaction of the caller's ([`begin_write`]:
/// counted as open in its task, its commit bumps the change generation) or
/// a short write ([`write_once`]: neither, and served first at the gate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    Transaction,
    Once,
}

async fn begin(db: &DatabaseConnection, writer: Writer) -> Result<WriteTxn, Error> {
    use sea_orm::{SqliteTransactionMode, TransactionOptions, TransactionTrait};
    let counted = writer == Writer::Transaction;
    let open = || counted.then(OpenTransaction::begin);
    // What a commit bumps (see `crate::changes`); `write_once` does not count.
    let changes = counted.then(|| crate::changes::of(db));
    let immediate = TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    };
    let Some(gate) = gate_of(db) else {
        // PostgreSQL: the transaction begins with its first statement.
        return Ok(WriteTxn::unbegun(db, open(), changes));
    };
    let mut turn = Turn(Some(take_turn(&gate, writer == Writer::Once).await?));
    let Some(inner) = turn.0.as_mut() else {
        return Err(Error::internal("the write turn went missing"));
    };
    if inner.group.is_none() {
        // The first writer of a group begins it; on failure the turn passes
        // on (dropped) and the next writer tries again.
        let writer = writer_of(&gate, db).await?;
        let txn = writer
            .begin_with_options(immediate)
            .await
            .map_err(db_error)?;
        inner.group = Some(Group {
            txn,
            started: Instant::now(),
            writers: 0,
            broken: false,
            outcome: watch::channel(None).0,
        });
    }
    let Some(group) = inner.group.as_mut() else {
        return Err(Error::internal("the write group went missing"));
    };
    match group.txn.begin().await {
        Ok(txn) => Ok(WriteTxn::begun(txn, open(), turn, changes)),
        Err(error) => {
            group.broken = true;
            Err(db_error(error))
        }
    }
}

/// A write transaction from [`begin_write`]; use it wherever a sea-orm
/// connection is expected. On SQLite it holds the write gate until it ends
/// (see [`begin_write`]).
///
/// On PostgreSQL the transaction begins with its first statement, and
/// inserts made with [`WriteTxn::insert_at_commit`] wait for the next
/// statement or the commit and go with it as one statement
/// ([`crate::deferred`]): a transaction that only inserts costs one round
/// trip.
#[derive(Debug)]
pub struct WriteTxn {
    // Fields drop in order: the transaction (on SQLite, the writer's
    // savepoint) ends before the turn passes on.
    txn: tokio::sync::OnceCell<DatabaseTransaction>,
    /// PostgreSQL: the pool the transaction begins on at its first
    /// statement (`None` on SQLite, whose transaction begins at once).
    pool: Option<DatabaseConnection>,
    backend: DbBackend,
    support_returning: bool,
    /// Inserts waiting for the next statement or the commit.
    deferred: std::sync::Mutex<Vec<sea_orm::sea_query::InsertStatement>>,
    _open: Option<OpenTransaction>,
    turn: Turn,
    /// The database's change generation, bumped once a commit succeeded
    /// (`None` for [`write_once`]).
    changes: Option<Arc<crate::changes::Generation>>,
}

impl WriteTxn {
    fn begun(
        txn: DatabaseTransaction,
        open: Option<OpenTransaction>,
        turn: Turn,
        changes: Option<Arc<crate::changes::Generation>>,
    ) -> Self {
        let (backend, support_returning) = (txn.get_database_backend(), txn.support_returning());
        Self {
            txn: tokio::sync::OnceCell::new_with(Some(txn)),
            pool: None,
            backend,
            support_returning,
            deferred: Default::default(),
            _open: open,
            turn,
            changes,
        }
    }

    fn unbegun(
        pool: &DatabaseConnection,
        open: Option<OpenTransaction>,
        changes: Option<Arc<crate::changes::Generation>>,
    ) -> Self {
        Self {
            txn: tokio::sync::OnceCell::new(),
            pool: Some(pool.clone()),
            backend: pool.get_database_backend(),
            support_returning: pool.support_returning(),
            deferred: Default::default(),
            _open: open,
            turn: Turn(None),
            changes,
        }
    }

    /// Inserts `insert` when the transaction sends its next statement or
    /// commits, together with the other inserts waiting (on PostgreSQL as
    /// one statement). Until then nothing of it is sent: an error it meets
    /// (a unique violation, say) comes from that statement or the commit.
    pub fn insert_at_commit(&self, insert: sea_orm::sea_query::InsertStatement) {
        self.deferred
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(insert);
    }

    /// Where to make reads that lock nothing before this transaction writes
    /// anything: on PostgreSQL the pool, so they do not begin the
    /// transaction (in a `READ COMMITTED` transaction a statement sees the
    /// rows committed when it starts, as one outside it does); on SQLite the
    /// transaction itself (its reads are made under the file's write turn,
    /// so no other writer of this process changes what they saw before the
    /// commit). Not for reads that must see this transaction's own writes.
    pub fn reads_before_writes(&self) -> ReadsBeforeWrites<'_> {
        match &self.pool {
            Some(pool) if self.txn.get().is_none() => ReadsBeforeWrites::Pool(pool),
            _ => ReadsBeforeWrites::Txn(self),
        }
    }

    fn take_deferred(&self) -> Vec<sea_orm::sea_query::InsertStatement> {
        std::mem::take(
            &mut *self
                .deferred
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// The transaction, begun if it was not, with the deferred inserts sent.
    async fn started(&self) -> Result<&DatabaseTransaction, DbErr> {
        let txn = match &self.pool {
            Some(pool) => self.txn.get_or_try_init(|| begin_counted(pool)).await?,
            None => self
                .txn
                .get()
                .ok_or_else(|| group_error("the write transaction went missing"))?,
        };
        let deferred = self.take_deferred();
        if !deferred.is_empty() {
            crate::deferred::insert_all(txn, deferred).await?;
        }
        Ok(txn)
    }

    fn bump(&self) {
        self.changes.iter().for_each(|generation| generation.bump());
    }

    /// Commits. On SQLite it returns once the group commit holding these
    /// writes is durably committed; if that commit fails, every writer of
    /// the group gets the error and none of their writes were kept.
    pub async fn commit(self) -> Result<(), DbErr> {
        if self.txn.get().is_none() {
            return self.commit_unbegun().await;
        }
        if let Err(error) = self.started().await {
            let _ = self.rollback().await;
            return Err(error);
        }
        let WriteTxn {
            txn,
            mut turn,
            changes,
            ..
        } = self;
        let txn = txn
            .into_inner()
            .ok_or_else(|| group_error("the write transaction went missing"))?;
        let bump = |()| changes.iter().for_each(|generation| generation.bump());
        let Some(inner) = turn.0.as_mut() else {
            return txn.commit().await.map(bump);
        };
        let released = txn.commit().await;
        let Some(group) = inner.group.as_mut() else {
            return Err(group_error("the write group went missing"));
        };
        if let Err(error) = released {
            group.broken = true;
            return Err(error);
        }
        group.writers += 1;
        let outcome = group.outcome.subscribe();
        drop(turn);
        group_outcome(outcome).await.map(bump)
    }

    /// Commits a PostgreSQL transaction that sent nothing yet: its deferred
    /// inserts as one statement of their own (atomic without a `BEGIN`), or
    /// in a transaction when they do not fit in one.
    async fn commit_unbegun(self) -> Result<(), DbErr> {
        let deferred = self.take_deferred();
        if deferred.is_empty() {
            return Ok(());
        }
        let pool = self
            .pool
            .as_ref()
            .ok_or_else(|| group_error("the write transaction went missing"))?;
        match crate::deferred::one_statement(&deferred) {
            Some(statement) => {
                pool.execute_raw(statement).await?;
            }
            None => {
                let txn = begin_counted(pool).await?;
                crate::deferred::insert_all(&txn, deferred).await?;
                txn.commit().await?;
            }
        }
        self.bump();
        Ok(())
    }

    /// Rolls back (on SQLite, this writer's savepoint only; the other
    /// writers of its group are unaffected). On SQLite it returns once the
    /// group ended, so what this writer read of the group's other writers is
    /// durable (or known lost) before the caller answers with it.
    pub async fn rollback(self) -> Result<(), DbErr> {
        let WriteTxn { txn, mut turn, .. } = self;
        let Some(txn) = txn.into_inner() else {
            // Nothing was sent: nothing to undo.
            return Ok(());
        };
        let rolled_back = txn.rollback().await;
        let Some(group) = turn.0.as_mut().and_then(|inner| inner.group.as_mut()) else {
            return rolled_back;
        };
        if rolled_back.is_err() {
            group.broken = true;
        }
        let outcome = group.outcome.subscribe();
        drop(turn);
        // The group's own outcome concerns its writers, not this one.
        let _ = group_outcome(outcome).await;
        rolled_back
    }
}

/// Waits (at most [`WRITE_WAIT`]) for the group commit `outcome` reports.
async fn group_outcome(
    mut outcome: watch::Receiver<Option<Result<(), String>>>,
) -> Result<(), DbErr> {
    let ended = tokio::time::timeout(WRITE_WAIT, outcome.wait_for(Option::is_some)).await;
    match ended {
        Ok(Ok(result)) => match result.as_ref() {
            Some(Ok(())) => Ok(()),
            Some(Err(reason)) => Err(group_error(&format!("the group commit failed: {reason}"))),
            None => Err(group_error("the group commit ended without an outcome")),
        },
        Ok(Err(_)) => Err(group_error("the group commit was abandoned")),
        Err(_) => Err(group_error(
            "timed out waiting for the group commit; the write may or may not be kept",
        )),
    }
}

/// A failed or unknown group commit, as a connection error (an
/// `unavailable` for callers, see [`db_error`]).
fn group_error(reason: &str) -> DbErr {
    DbErr::Conn(RuntimeErr::Internal(reason.to_owned()))
}

#[async_trait::async_trait]
impl ConnectionTrait for WriteTxn {
    fn get_database_backend(&self) -> DbBackend {
        self.backend
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.started().await?.execute_raw(stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.started().await?.execute_unprepared(sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.started().await?.query_one_raw(stmt).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.started().await?.query_all_raw(stmt).await
    }

    fn support_returning(&self) -> bool {
        self.support_returning
    }

    fn is_mock_connection(&self) -> bool {
        false
    }
}

/// Whether reads through a connection lock the rows they read: only inside
/// a write transaction. A statement on the pool commits on its own, so a
/// lock taken there protects nothing once it answers, and on PostgreSQL
/// costs a transaction id, a lock record in the write-ahead log and a commit
/// that waits for it to be flushed (and readers of one row wait for each
/// other).
pub trait RowLocks {
    /// True when a `FOR UPDATE` read through it holds its lock until a
    /// commit to come.
    fn locks_rows(&self) -> bool;
}

impl RowLocks for DatabaseConnection {
    fn locks_rows(&self) -> bool {
        false
    }
}

impl RowLocks for WriteTxn {
    fn locks_rows(&self) -> bool {
        true
    }
}

impl RowLocks for ReadsBeforeWrites<'_> {
    fn locks_rows(&self) -> bool {
        matches!(self, ReadsBeforeWrites::Txn(_))
    }
}

/// `query`, locking the rows it reads (`FOR UPDATE` on PostgreSQL; SQLite's
/// write transactions are serial) when `conn` is a write transaction, for
/// writers that re-read the row they change; a plain read elsewhere.
pub fn locked_in<Q: sea_orm::QuerySelect>(query: Q, conn: &impl RowLocks) -> Q {
    if conn.locks_rows() {
        query.lock_exclusive()
    } else {
        query
    }
}

/// `BEGIN`s sent for write transactions on PostgreSQL (see
/// [`postgres_transactions_begun`]).
static POSTGRES_BEGINS: AtomicU64 = AtomicU64::new(0);

/// How many write transactions this process began on PostgreSQL: a
/// [`WriteTxn`] begins one at its first statement, none when it only
/// inserts (see [`WriteTxn::insert_at_commit`]). For tests and diagnostics.
pub fn postgres_transactions_begun() -> u64 {
    POSTGRES_BEGINS.load(Ordering::Relaxed)
}

async fn begin_counted(pool: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    use sea_orm::TransactionTrait;
    let txn = pool.begin().await?;
    POSTGRES_BEGINS.fetch_add(1, Ordering::Relaxed);
    Ok(txn)
}

/// Implements sea-orm's `ConnectionTrait` for `$type`, a connection that is
/// one of two others: `$this => $value` names the enum to match (of
/// `$first` or `$second`, each holding the connection statements go to).
macro_rules! connection_of_either {
    ($type:ty, $this:ident => $value:expr, $first:path, $second:path) => {
        #[async_trait::async_trait]
        impl ConnectionTrait for $type {
            fn get_database_backend(&self) -> DbBackend {
                let $this = self;
                match $value {
                    $first(conn) => conn.get_database_backend(),
                    $second(conn) => conn.get_database_backend(),
                }
            }

            async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
                let $this = self;
                match $value {
                    $first(conn) => conn.execute_raw(stmt).await,
                    $second(conn) => conn.execute_raw(stmt).await,
                }
            }

            async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
                let $this = self;
                match $value {
                    $first(conn) => conn.execute_unprepared(sql).await,
                    $second(conn) => conn.execute_unprepared(sql).await,
                }
            }

            async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
                let $this = self;
                match $value {
                    $first(conn) => conn.query_one_raw(stmt).await,
                    $second(conn) => conn.query_one_raw(stmt).await,
                }
            }

            async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
                let $this = self;
                match $value {
                    $first(conn) => conn.query_all_raw(stmt).await,
                    $second(conn) => conn.query_all_raw(stmt).await,
                }
            }

            fn support_returning(&self) -> bool {
                let $this = self;
                match $value {
                    $first(conn) => conn.support_returning(),
                    $second(conn) => conn.support_returning(),
                }
            }

            fn is_mock_connection(&self) -> bool {
                false
            }
        }
    };
}

/// A connection for the reads a write transaction makes before it writes;
/// see [`WriteTxn::reads_before_writes`].
#[derive(Debug)]
pub enum ReadsBeforeWrites<'a> {
    /// PostgreSQL, the transaction not begun: the pool.
    Pool(&'a DatabaseConnection),
    /// The transaction.
    Txn(&'a WriteTxn),
}

connection_of_either!(ReadsBeforeWrites<'_>, reads => reads, ReadsBeforeWrites::Pool, ReadsBeforeWrites::Txn);

/// Begins a short write made of a statement or two with no other work in
/// between: on SQLite it joins the group commit like [`begin_write`] (so it
/// neither waits in SQLite's busy handler behind an open group nor costs an
/// fsync of its own), on PostgreSQL its statements run on the pool as they
/// are (each commits on its own). On SQLite it waits for its turn ahead of
/// the longer writers of [`begin_write`] (see `GateState::short`). Use it
/// wherever a sea-orm connection is expected, then [`WriteOnce::commit`];
/// dropped without a commit, its writes are undone on SQLite.
///
/// Unlike [`begin_write`] it does not count as an open transaction of the
/// task: it runs no code of the caller's between its statements, and it may
/// run beside a job's handler in the same task (lease renewals).
pub async fn write_once(db: &DatabaseConnection) -> Result<WriteOnce<'_>, Error> {
    Ok(WriteOnce(match Backend::of(db) {
        Backend::Postgres => Once::Direct(db),
        Backend::Sqlite => Once::Grouped(Box::new(begin(db, Writer::Once).await?)),
    }))
}

/// A short write from [`write_once`].
#[derive(Debug)]
pub struct WriteOnce<'a>(Once<'a>);

#[derive(Debug)]
enum Once<'a> {
    Direct(&'a DatabaseConnection),
    Grouped(Box<WriteTxn>),
}

impl WriteOnce<'_> {
    /// Commits: on SQLite, returns once the group commit holding these writes
    /// is durable; on PostgreSQL the statements already committed.
    pub async fn commit(self) -> Result<(), Error> {
        match self.0 {
            Once::Direct(_) => Ok(()),
            Once::Grouped(txn) => (*txn).commit().await.map_err(db_error),
        }
    }
}

connection_of_either!(WriteOnce<'_>, once => &once.0, Once::Direct, Once::Grouped);
