//! A bounded read cache of resource rows, for the single-resource reads on
//! hot paths (`GetResource`, the console, a resource's secrets), and the
//! PostgreSQL listener that keeps it honest across replicas.
//!
//! Invariant: the cache never serves a row older than a change this process
//! has seen committed. Its rows are valid only while the database's change
//! generation ([`marketbridge_storage::changes`]) is the one they were read
//! at: every write transaction of this process bumps it when it commits, and
//! on PostgreSQL a trigger on `resources` notifies [`CHANNEL`] at every
//! other replica's commit, which [`listen_for_changes`] turns into a bump.
//! A reader takes the generation before it reads and keeps the row only if
//! the generation is still the same after, so a write committed during the
//! read leaves no stale row behind. On PostgreSQL the cache serves nothing
//! while the listener is not listening (starting up, or after a lost
//! connection): it bumps once it listens again, as changes made meanwhile
//! went unannounced.
//!
//! The generation is per database, not per row: any committed write of this
//! service (or any change to `resources` by another replica) empties the
//! cache. Reads between writes, the common case, cost no database round trip.

use crate::entity::resource;
use marketbridge_core::ids::ResourceId;
use marketbridge_storage::changes::{self, Generation};
use marketbridge_storage::sea_orm::DatabaseConnection;
use marketbridge_storage::sea_orm::sqlx::{self, postgres::PgListener, postgres::PgPoolOptions};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The channel the `resources` trigger notifies on PostgreSQL (created by the
/// migration `m0005_000001_resources_change_notifications`).
pub const CHANNEL: &str = "marketbridge_provisioning_resources";

/// Rows kept unless configured otherwise (`provisioning.resource_cache_entries`).
pub const DEFAULT_ENTRIES: usize = 10_000;

/// How often the listener checks that its connection still answers: a
/// connection that died without a word (a network partition) would otherwise
/// leave the cache trusting a channel that no longer delivers.
const PING_INTERVAL: Duration = Duration::from_secs(5);

/// How long a connection, a `LISTEN` or a ping may take before the listener
/// gives up on the connection.
const LISTENER_TIMEOUT: Duration = Duration::from_secs(5);

/// First and longest pause before connecting the listener again.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Resource rows by id, all read at one generation of the database.
#[derive(Default)]
struct Rows {
    generation: u64,
    by_id: HashMap<String, Arc<resource::Model>>,
}

/// The read cache of resource rows; see the module documentation.
pub struct ResourceCache {
    generation: Arc<Generation>,
    /// False while a listener is needed (PostgreSQL) and not listening.
    listening: AtomicBool,
    /// Most rows kept; 0 turns the cache off.
    capacity: AtomicUsize,
    rows: Mutex<Rows>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// The generation a reader took before reading, from [`ResourceCache::ticket`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

impl ResourceCache {
    /// A cache of `entries` rows (0: off) of `db`'s `resources`. On
    /// PostgreSQL it serves nothing until [`listen_for_changes`] listens.
    pub fn new(db: &DatabaseConnection, entries: usize) -> Self {
        let needs_listener =
            marketbridge_storage::Backend::of(db) == marketbridge_storage::Backend::Postgres;
        Self {
            generation: changes::of(db),
            listening: AtomicBool::new(!needs_listener),
            capacity: AtomicUsize::new(entries),
            rows: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Sets how many rows are kept; 0 turns the cache off (and empties it).
    pub fn set_capacity(&self, entries: usize) {
        self.capacity.store(entries, Ordering::SeqCst);
        let dropped = {
            let mut rows = self.rows();
            (rows.by_id.len() > entries).then(|| std::mem::take(&mut rows.by_id))
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

    fn rows(&self) -> MutexGuard<'_, Rows> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The generation to read at, taken before the read; `None` when the
    /// cache is not serving (read from the database, keep nothing).
    pub(crate) fn ticket(&self) -> Option<Ticket> {
        self.serving().then(|| Ticket(self.generation.current()))
    }

    /// The row of `id` if it was read at the generation of `ticket`.
    pub(crate) fn get(&self, id: &ResourceId, ticket: Ticket) -> Option<Arc<resource::Model>> {
        let found = {
            let rows = self.rows();
            if rows.generation == ticket.0 {
                rows.by_id.get(id.as_str()).cloned()
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

    /// Keeps `row`, read from the database at `ticket`, unless a change was
    /// committed since (the row may predate it). When full, an arbitrary row
    /// makes room.
    pub(crate) fn insert(&self, row: Arc<resource::Model>, ticket: Ticket) {
        let capacity = self.capacity.load(Ordering::SeqCst);
        let mut stale = None;
        {
            let mut rows = self.rows();
            if capacity == 0 || !self.serving() || self.generation.current() != ticket.0 {
                return;
            }
            if rows.generation != ticket.0 {
                // Every row kept was read at an earlier generation.
                stale = Some(std::mem::take(&mut rows.by_id));
                rows.generation = ticket.0;
            }
            if rows.by_id.len() >= capacity
                && !rows.by_id.contains_key(&row.id)
                && let Some(victim) = rows.by_id.keys().next().cloned()
            {
                rows.by_id.remove(&victim);
            }
            rows.by_id.insert(row.id.clone(), row);
        }
        // Freed outside the lock.
        drop(stale);
    }

    fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::SeqCst);
    }
}

/// Listens on PostgreSQL for changes other replicas make to `resources`
/// ([`CHANNEL`]) and bumps `db`'s change generation at each, until
/// `shutdown`. Lets `cache` serve only while it listens; a lost connection is
/// connected again (with a growing pause) and followed by a bump. Returns at
/// once on SQLite, which one process owns.
pub async fn listen_for_changes(
    db: DatabaseConnection,
    cache: Arc<ResourceCache>,
    shutdown: CancellationToken,
) {
    if marketbridge_storage::Backend::of(&db) != marketbridge_storage::Backend::Postgres {
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
        let ended = listen_session(&pool, &cache, &shutdown, &mut pause).await;
        cache.set_listening(false);
        let _ = tokio::time::timeout(LISTENER_TIMEOUT, pool.close()).await;
        if shutdown.is_cancelled() {
            break;
        }
        if let Err(reason) = ended {
            tracing::warn!(channel = CHANNEL, error = %reason, retry_ms = pause.as_millis() as u64, "resource change listener disconnected; the resource cache is off until it listens again");
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(RETRY_MAX);
    }
    cache.set_listening(false);
}

/// One connection's worth of listening: returns `Ok` at `shutdown`, the
/// reason otherwise.
async fn listen_session(
    pool: &sqlx::PgPool,
    cache: &ResourceCache,
    shutdown: &CancellationToken,
    pause: &mut Duration,
) -> Result<(), String> {
    let connecting = async {
        let mut listener = PgListener::connect_with(pool).await?;
        // A lost connection ends the session (so the cache stops serving)
        // instead of being replaced behind its back.
        listener.eager_reconnect(false);
        listener.listen(CHANNEL).await?;
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
    cache.generation.bump();
    cache.set_listening(true);
    *pause = RETRY_MIN;
    tracing::info!(
        channel = CHANNEL,
        "listening for resource changes; the resource cache serves reads"
    );
    let mut pings = tokio::time::interval(PING_INTERVAL);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    pings.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            received = listener.try_recv() => match received {
                Ok(Some(_)) => cache.generation.bump(),
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
