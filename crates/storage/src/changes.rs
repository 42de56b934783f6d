//! Change generations: one counter per database this process writes to,
//! bumped after every committed write transaction, so a read cache can tell
//! whether anything changed since it read a row.
//!
//! A cache remembers the generation a row was read at and serves the row only
//! while the database's generation is still the same. [`crate::WriteTxn`]
//! bumps the generation of its database once its commit succeeded (the handle
//! is taken when the transaction begins, so a commit costs one atomic add);
//! changes this process cannot see itself (another replica's, on a shared
//! PostgreSQL) are announced by [`Generation::bump`] or [`bump_all`], for
//! example from a `LISTEN`/`NOTIFY` listener.
//!
//! Writes made through [`crate::write_once`] (the outbox's claims, lease
//! renewals, idempotency records: the shared tables) do not count: a cache of
//! a service's own rows must be invalidated by that service's
//! [`crate::begin_write`] transactions, which is how every service writes its
//! rows.
//!
//! A database's identity is its SQLite file (as resolved on disk, so two names
//! of one file share a generation) or its PostgreSQL server and database name
//! (`host:port/database`, as spelled in the connection's options).

use sea_orm::DatabaseConnection;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// One database's change generation: a counter that only grows.
#[derive(Debug, Default)]
pub struct Generation {
    value: AtomicU64,
}

impl Generation {
    /// The current generation. A reader takes it before reading and compares
    /// it after: the same value means no write of this process committed in
    /// between (and no remote change was announced).
    pub fn current(&self) -> u64 {
        self.value.load(Ordering::SeqCst)
    }

    /// Announces a change: everything read at an earlier generation is
    /// stale.
    pub fn bump(&self) {
        self.value.fetch_add(1, Ordering::SeqCst);
    }
}

/// The generations of this process's databases, by identity.
#[derive(Default)]
struct Registry {
    /// By the name a SQLite pool was opened with (resolved once) or by the
    /// PostgreSQL identity.
    by_name: HashMap<String, Arc<Generation>>,
    /// By the SQLite file a name resolves to.
    by_file: HashMap<PathBuf, Arc<Generation>>,
}

static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The identity of `db`'s database: `sqlite:<file name>` or
/// `postgres://host:port/database` (the socket folder stands for the host
/// when connecting through a Unix socket).
pub fn identity(db: &DatabaseConnection) -> String {
    match db.get_database_backend() {
        sea_orm::DbBackend::Postgres => {
            let pool = db.get_postgres_connection_pool();
            let options = pool.connect_options();
            let host = match options.get_socket() {
                Some(socket) => socket.display().to_string(),
                None => options.get_host().to_owned(),
            };
            format!(
                "postgres://{host}:{}/{}",
                options.get_port(),
                options.get_database().unwrap_or_default()
            )
        }
        _ => {
            let pool = db.get_sqlite_connection_pool();
            format!("sqlite:{}", pool.connect_options().get_filename().display())
        }
    }
}

/// The change generation of `db`'s database, shared by every pool of this
/// process that opened the same database.
pub fn of(db: &DatabaseConnection) -> Arc<Generation> {
    let name = identity(db);
    let mut registry = registry();
    if let Some(generation) = registry.by_name.get(&name) {
        return generation.clone();
    }
    let generation = match name.strip_prefix("sqlite:") {
        Some(file) => {
            let path = std::path::Path::new(file);
            let file = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
            registry.by_file.entry(file).or_default().clone()
        }
        None => Arc::default(),
    };
    registry.by_name.insert(name, generation.clone());
    generation
}

/// Bumps the generation of `db`'s database (a change this process learned
/// of from elsewhere).
pub fn bump(db: &DatabaseConnection) {
    of(db).bump();
}

/// Bumps the generation of every database of this process, for when it
/// cannot tell which changed (a lost notification channel).
pub fn bump_all() {
    let registry = registry();
    for generation in registry.by_name.values() {
        generation.bump();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_pools_of_one_file_share_a_generation_and_others_do_not() {
        let folder = std::env::temp_dir().join(format!(
            "marketbridge-changes-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&folder).unwrap();
        let url = |name: &str| format!("sqlite://{}?mode=rwc", folder.join(name).display());
        let first = crate::connect(&url("a.db")).await.unwrap();
        let second = crate::connect(&url("a.db")).await.unwrap();
        let other = crate::connect(&url("b.db")).await.unwrap();
        let (a, b, c) = (of(&first), of(&second), of(&other));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        let (before, other_before) = (a.current(), c.current());
        bump(&second);
        assert_eq!(a.current(), before + 1);
        assert_eq!(c.current(), other_before);
        bump_all();
        assert!(a.current() > before + 1);
        assert!(c.current() > other_before);
        let _ = std::fs::remove_dir_all(folder);
    }

    crate::backend_test!(
        a_committed_write_bumps_and_a_rolled_back_one_does_not,
        |database| async move {
            use sea_orm::ConnectionTrait;
            let db = crate::connect(database.url()).await.unwrap();
            db.execute_unprepared("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
                .await
                .unwrap();
            let generation = of(&db);
            let before = generation.current();
            let txn = crate::begin_write(&db).await.unwrap();
            txn.execute_unprepared("INSERT INTO notes (id) VALUES (1)")
                .await
                .unwrap();
            assert_eq!(generation.current(), before, "not before the commit");
            txn.commit().await.unwrap();
            assert_eq!(generation.current(), before + 1);
            let txn = crate::begin_write(&db).await.unwrap();
            txn.execute_unprepared("INSERT INTO notes (id) VALUES (2)")
                .await
                .unwrap();
            txn.rollback().await.unwrap();
            assert_eq!(generation.current(), before + 1);
            let once = crate::write_once(&db).await.unwrap();
            once.execute_unprepared("INSERT INTO notes (id) VALUES (3)")
                .await
                .unwrap();
            once.commit().await.unwrap();
            assert_eq!(
                generation.current(),
                before + 1,
                "write_once does not count"
            );
        }
    );
}
