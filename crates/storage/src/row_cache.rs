//! A bounded read cache of one table's rows, for single-row reads on hot
//! paths, and the PostgreSQL listener that keeps it honest across replicas.
//! The provisioning service keeps resources in one, the account service
//! accounts.
//!
//! Invariant: a cache never serves a row older than a change this process
//! has seen committed. Its rows are valid only while the database's change
//! generation ([`crate::changes`]) is the one they were read at: every write
//! transaction of this process bumps it when it commits, and on PostgreSQL a
//! trigger on the table ([`notify_on_change`]) notifies the cache's channel
//! at every other replica's commit, which [`listen_for_changes`] turns into a
//! bump. A reader takes the generation before it reads ([`RowCache::ticket`])
//! and keeps the row only if the generation is still the same after, so a
//! write committed during the read leaves no stale row behind. On PostgreSQL
//! a cache serves nothing while its listener is not listening (starting up,
//! or after a lost connection): it bumps once it listens again, as changes
//! made meanwhile went unannounced.
//!
//! The generation is per database, not per row: any committed write of the
//! service (or any change to the table by another replica) empties the
//! cache. Reads between writes, the common case, cost no database round trip.
//! A row may be kept under several keys (an account by our id and by its
//! marketplace's); only rows that were found are kept, never an absence.

use crate::changes::{self, Generation};
use sea_orm::sqlx::{self, postgres::PgListener, postgres::PgPoolOptions};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a listener checks that its connection still answers: a
/// connection that died without a word (a network partition) would otherwise
/// leave the cache trusting a channel that no longer delivers.
const PING_INTERVAL: Duration = Duration::from_secs(5);

/// How long a connection, a `LISTEN` or a ping may take before the listener
/// gives up on the connection.
const LISTENER_TIMEOUT: Duration = Duration::from_secs(5);

/// First and longest pause before connecting a listener again.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Rows by key, all read at one generation of the database.
struct Rows<V> {
    generation: u64,
    by_key: HashMap<String, Arc<V>>,
}

/// A read cache of rows of type `V`; see the module documentation.
pub struct RowCache<V> {
    /// What the cache holds, for logs (`resource`, `account`).
    what: &'static str,
    generation: Arc<Generation>,
    /// False while a listener is needed (PostgreSQL) and not listening.
    listening: AtomicBool,
    /// Most keys kept; 0 turns the cache off.
    capacity: AtomicUsize,
    rows: Mutex<Rows<V>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// The generation a reader took before reading, from [`RowCache::ticket`].
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

impl<V> RowCache<V> {
    /// A cache of `entries` keys (0: off) of rows of `db`, holding `what`
    /// (for logs). On PostgreSQL it serves nothing until
    /// [`listen_for_changes`] listens.
    pub fn new(db: &DatabaseConnection, what: &'static str, entries: usize) -> Self {
        let needs_listener = crate::Backend::of(db) == crate::Backend::Postgres;
        Self {
            what,
            generation: changes::of(db),
            listening: AtomicBool::new(!needs_listener),
            capacity: AtomicUsize::new(entries),
            rows: Mutex::new(Rows {
                generation: 0,
                by_key: HashMap::new(),
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Sets how many keys are kept; 0 turns the cache off (and empties it).
    pub fn set_capacity(&self, entries: usize) {
        self.capacity.store(entries, Ordering::SeqCst);
        let dropped = {
            let mut rows = self.rows();
            (rows.by_key.len() > entries).then(|| std::mem::take(&mut rows.by_key))
        };
        drop(dropped);
    }

    /// True while the cache may serve reads: it is on and, on PostgreSQL,
    /// the change listener listens.
    pub fn serving(&self) -> bool {
        self.capacity.load(Ordering::SeqCst) > 0 && self.listening.load(Ordering::SeqCst)
    }

    /// Reads answered from the cache since the start.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Reads the cache could have answered but sent to the database.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    fn rows(&self) -> MutexGuard<'_, Rows<V>> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The generation to read at, taken before the read; `None` when the
    /// cache is not serving (read from the database, keep nothing).
    pub fn ticket(&self) -> Option<Ticket> {
        self.serving().then(|| Ticket(self.generation.current()))
    }

    /// The row kept under `key` if it was read at the generation of
    /// `ticket`.
    pub fn get(&self, key: &str, ticket: Ticket) -> Option<Arc<V>> {
        let found = {
            let rows = self.rows();
            if rows.generation == ticket.0 {
                rows.by_key.get(key).cloned()
            } else {
                None
            }
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Keeps `row`, read from the database at `ticket`, under each of
    /// `keys`, unless a change was committed since (the row may predate it).
    /// When full, arbitrary keys make room.
    pub fn insert<const N: usize>(&self, keys: [String; N], row: Arc<V>, ticket: Ticket) {
        let capacity = self.capacity.load(Ordering::SeqCst);
        let mut stale = None;
        let mut evicted = Vec::new();
        {
            let mut rows = self.rows();
            if capacity == 0 || !self.serving() || self.generation.current() != ticket.0 {
                return;
            }
            if rows.generation != ticket.0 {
                // Every row kept was read at an earlier generation.
                stale = Some(std::mem::take(&mut rows.by_key));
                rows.generation = ticket.0;
            }
            for key in keys {
                if rows.by_key.len() >= capacity
                    && !rows.by_key.contains_key(&key)
                    && let Some(victim) = rows.by_key.keys().next().cloned()
                {
                    evicted.extend(rows.by_key.remove(&victim));
                }
                rows.by_key.insert(key, row.clone());
            }
        }
        // Freed outside the lock.
        drop((stale, evicted));
    }

    /// Announces a change of the cache's database made outside this
    /// process's write transactions.
    pub fn bump(&self) {
        self.generation.bump();
    }

    fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::SeqCst);
    }
}

/// Makes every statement that updates or deletes rows of `table` (or
/// truncates it) notify `channel` when it commits, with the operation
/// (`UPDATE`, `DELETE`, `TRUNCATE`) as the payload: a trigger named
/// `<table>_changed` calling the function `<table>_changed_notify`. Each
/// replica's cache of the table learns so of the other replicas' changes.
/// Inserts notify nothing: a cache keeps only rows it found, under keys
/// that are unique in the table, so a new row cannot make a kept one stale,
/// and PostgreSQL serialises the commits that notify (a provision inserts
/// its resource). For a migration's `up`; nothing on SQLite, which one
/// process owns.
pub async fn notify_on_change(
    db: &impl ConnectionTrait,
    table: &str,
    channel: &str,
) -> Result<(), DbErr> {
    if db.get_database_backend() != sea_orm::DbBackend::Postgres {
        return Ok(());
    }
    db.execute_unprepared(&format!(
        "CREATE OR REPLACE FUNCTION {table}_changed_notify() RETURNS trigger \
         LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('{channel}', TG_OP); RETURN NULL; END $$"
    ))
    .await?;
    db.execute_unprepared(&format!(
        "DROP TRIGGER IF EXISTS {table}_changed ON {table}"
    ))
    .await?;
    db.execute_unprepared(&format!(
        "CREATE TRIGGER {table}_changed \
         AFTER UPDATE OR DELETE OR TRUNCATE ON {table} \
         FOR EACH STATEMENT EXECUTE FUNCTION {table}_changed_notify()"
    ))
    .await?;
    Ok(())
}

/// Undoes [`notify_on_change`], for a migration's `down`.
pub async fn stop_notifying_on_change(db: &impl ConnectionTrait, table: &str) -> Result<(), DbErr> {
    if db.get_database_backend() != sea_orm::DbBackend::Postgres {
        return Ok(());
    }
    db.execute_unprepared(&format!(
        "DROP TRIGGER IF EXISTS {table}_changed ON {table}"
    ))
    .await?;
    db.execute_unprepared(&format!("DROP FUNCTION IF EXISTS {table}_changed_notify()"))
        .await?;
    Ok(())
}

/// Listens on PostgreSQL for the changes other replicas make to the cached
/// table (announced on `channel` by [`notify_on_change`]) and bumps `db`'s
/// change generation at each, until `shutdown`. Lets `cache` serve only
/// while it listens; a lost connection is connected again (with a growing
/// pause) and followed by a bump. Returns at once on SQLite, which one
/// process owns.
pub async fn listen_for_changes<V>(
    db: DatabaseConnection,
    cache: Arc<RowCache<V>>,
    channel: &'static str,
    shutdown: CancellationToken,
) {
    if crate::Backend::of(&db) != crate::Backend::Postgres {
        return;
    }
    let options = (*db.get_postgres_connection_pool().connect_options()).clone();
    let mut pause = RETRY_MIN;
    while !shutdown.is_cancelled() {
        // A pool of one fresh connection per session, closed after it, so a
        // connection given up on is never used again.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(LISTENER_TIMEOUT)
            .connect_lazy_with(options.clone());
        let ended = listen_session(&pool, &cache, channel, &shutdown, &mut pause).await;
        cache.set_listening(false);
        let _ = tokio::time::timeout(LISTENER_TIMEOUT, pool.close()).await;
        if shutdown.is_cancelled() {
            break;
        }
        if let Err(reason) = ended {
            tracing::warn!(channel, error = %reason, retry_ms = pause.as_millis() as u64, "{} change listener disconnected; the {} cache is off until it listens again", cache.what, cache.what);
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(RETRY_MAX);
    }
    cache.set_listening(false);
}

/// Starts [`listen_for_changes`] for `cache` of `db` on PostgreSQL, until
/// `shutdown`; `None` on SQLite, which needs no listener. Until it listens,
/// the cache serves nothing.
pub fn spawn_listener<V: Send + Sync + 'static>(
    db: &DatabaseConnection,
    cache: &Arc<RowCache<V>>,
    channel: &'static str,
    shutdown: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    (crate::Backend::of(db) == crate::Backend::Postgres).then(|| {
        tokio::spawn(listen_for_changes(
            db.clone(),
            cache.clone(),
            channel,
            shutdown,
        ))
    })
}

/// One connection's worth of listening: returns `Ok` at `shutdown`, the
/// reason otherwise.
async fn listen_session<V>(
    pool: &sqlx::PgPool,
    cache: &RowCache<V>,
    channel: &'static str,
    shutdown: &CancellationToken,
    pause: &mut Duration,
) -> Result<(), String> {
    let connecting = async {
        let mut listener = PgListener::connect_with(pool).await?;
        // A lost connection ends the session (so the cache stops serving)
        // instead of being replaced behind its back.
        listener.eager_reconnect(false);
        listener.listen(channel).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    let mut listener = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        connected = tokio::time::timeout(LISTENER_TIMEOUT, connecting) => match connected {
            Ok(Ok(listener)) => listener,
            Ok(Err(error)) => return Err(error.to_string()),
            Err(_) => return Err("timed out connecting".to_owned()),
        },
    };
    // Changes committed while nobody listened went unannounced.
    cache.bump();
    cache.set_listening(true);
    *pause = RETRY_MIN;
    tracing::info!(
        channel,
        "listening for {} changes; the {} cache serves reads",
        cache.what,
        cache.what
    );
    let mut pings = tokio::time::interval(PING_INTERVAL);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    pings.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            received = listener.try_recv() => match received {
                Ok(Some(_)) => cache.bump(),
                Ok(None) => return Err("the connection was lost".to_owned()),
                Err(error) => return Err(error.to_string()),
            },
            _ = pings.tick() => {
                let ping = sqlx::query("SELECT 1").execute(&mut listener);
                match tokio::time::timeout(LISTENER_TIMEOUT, ping).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return Err(format!("ping failed: {error}")),
                    Err(_) => return Err("ping timed out".to_owned()),
                }
            }
        }
    }
}
