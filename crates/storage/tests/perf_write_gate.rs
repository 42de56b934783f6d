//! SQLite writers of one process queue on the database's write gate (a FIFO
//! in the process) instead of meeting in SQLite's busy handler, and a write
//! acknowledged after its commit survives the process being killed.

use marketbridge_config::OutboxOptions;
use marketbridge_core::time::system_clock;
use marketbridge_storage::outbox::{NewJob, Outbox};
use marketbridge_storage::sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, Statement, sqlx,
};
use marketbridge_storage::sea_orm_migration::prelude::*;
use marketbridge_storage::testing::{TestBackend, TestDatabase, acknowledged_before_sigkill};
use marketbridge_storage::{UnitOfWork, begin_write, connect, migrations, write_gate};
use std::collections::BTreeSet;
use std::io::Write;
use std::str::FromStr;
use std::time::Duration;

struct TestMigrator;

impl MigratorTrait for TestMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        migrations::shared()
    }
}

async fn open(url: &str) -> DatabaseConnection {
    let db = connect(url).await.expect("connect");
    TestMigrator::up(&db, None).await.expect("migrate");
    db.execute_unprepared(
        "CREATE TABLE IF NOT EXISTS written (id TEXT PRIMARY KEY, writer INTEGER NOT NULL, n INTEGER NOT NULL)",
    )
    .await
    .expect("table");
    db
}

/// A connection of its own that gives up at once when another holds the
/// write lock (no busy handler).
async fn impatient(database: &TestDatabase) -> sqlx::SqliteConnection {
    use sqlx::ConnectOptions;
    sqlx::sqlite::SqliteConnectOptions::from_str(database.url())
        .expect("options")
        .busy_timeout(Duration::ZERO)
        .connect()
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_writer_waits_in_the_process_not_in_sqlite() {
    let database = TestDatabase::create(TestBackend::Sqlite)
        .await
        .expect("SQLite");
    let db = open(database.url()).await;
    // Another pool of the same file shares its gate.
    let other = connect(database.url()).await.expect("connect");
    let turn = write_gate(&db).await.expect("the gate");
    assert!(turn.is_some(), "SQLite has a gate");
    let writer = tokio::spawn(async move {
        let txn = begin_write(&other).await.expect("begin");
        txn.execute_unprepared("INSERT INTO written (id, writer, n) VALUES ('w', 1, 1)")
            .await
            .expect("insert");
        txn.commit().await.expect("commit");
    });
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert!(!writer.is_finished(), "the writer waits for its turn");
    // While it waits, it holds no lock in SQLite: a connection that would
    // fail at once on a held lock takes the write lock and gives it back.
    let mut probe = impatient(&database).await;
    sqlx::raw_sql("BEGIN IMMEDIATE; ROLLBACK")
        .execute(&mut probe)
        .await
        .expect("nobody holds SQLite's write lock while the writer waits");
    drop(turn);
    writer.await.expect("the writer went on once its turn came");
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT id FROM written",
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_writers_all_commit() {
    let database = TestDatabase::create(TestBackend::Sqlite)
        .await
        .expect("SQLite");
    let db = open(database.url()).await;
    let outbox = Outbox::new(db.clone(), system_clock(), OutboxOptions::default());
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..16 {
        let (db, outbox) = (db.clone(), outbox.clone());
        writers.spawn(async move {
            for n in 0..25 {
                let mut work = UnitOfWork::begin(&db, &outbox).await?;
                // Read, then write: the pattern that needs BEGIN IMMEDIATE.
                work.query_all_raw(Statement::from_string(
                    DbBackend::Sqlite,
                    "SELECT count(*) FROM written",
                ))
                .await
                .map_err(marketbridge_storage::db_error)?;
                work.execute_unprepared(&format!(
                    "INSERT INTO written (id, writer, n) VALUES ('{writer}-{n}', {writer}, {n})"
                ))
                .await
                .map_err(marketbridge_storage::db_error)?;
                work.enqueue(NewJob::new("test.written", &(writer, n)).unwrap())
                    .await?;
                work.commit().await?;
            }
            Ok::<_, marketbridge_core::Error>(())
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("writer").expect("every write commits");
    }
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT id FROM written",
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), 16 * 25);
    assert_eq!(outbox.stats().await.unwrap().pending, 16 * 25);
}

/// Set in the child process: the database it writes to.
const CHILD_ENV: &str = "MARKETBRIDGE_TEST_CRASH_CHILD_DB";

/// The child: four writers commit rows (each with a job) as fast as they
/// can and print `ack <id>` after each commit, until killed.
async fn child(url: &str) -> ! {
    let db = connect(url).await.expect("connect");
    let outbox = Outbox::new(db.clone(), system_clock(), OutboxOptions::default());
    let (acks, mut acked) = tokio::sync::mpsc::unbounded_channel::<String>();
    for writer in 0..4 {
        let (db, outbox, acks) = (db.clone(), outbox.clone(), acks.clone());
        tokio::spawn(async move {
            for n in 0.. {
                let id = format!("{writer}-{n}");
                let mut work = UnitOfWork::begin(&db, &outbox).await.expect("begin");
                work.execute_unprepared(&format!(
                    "INSERT INTO written (id, writer, n) VALUES ('{id}', {writer}, {n})"
                ))
                .await
                .expect("insert");
                work.enqueue(
                    NewJob::new("test.written", &id)
                        .unwrap()
                        .dedupe_key(id.clone()),
                )
                .await
                .expect("enqueue");
                work.commit().await.expect("commit");
                let _ = acks.send(id);
            }
        });
    }
    let mut stdout = std::io::stdout().lock();
    while let Some(id) = acked.recv().await {
        writeln!(stdout, "ack {id}").expect("stdout");
        stdout.flush().expect("stdout");
    }
    unreachable!("the writers never stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_a_sigkill() {
    if let Ok(url) = std::env::var(CHILD_ENV) {
        child(&url).await;
    }
    let database = TestDatabase::create(TestBackend::Sqlite)
        .await
        .expect("SQLite");
    open(database.url()).await.close().await.expect("close");

    // Read acknowledgements until 400, then kill the child mid-stream.
    let acked = acknowledged_before_sigkill(
        "every_acknowledged_write_survives_a_sigkill",
        (CHILD_ENV, database.url()),
        400,
    )
    .await;

    let db = connect(database.url()).await.expect("reopen");
    let written = texts(&db, "SELECT id FROM written").await;
    let lost: Vec<&String> = acked.difference(&written).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let enqueued = texts(&db, "SELECT dedupe_key FROM outbox_jobs").await;
    assert_eq!(enqueued, written, "each row came with its job");
}

/// The one text column `sql` selects, as a set.
async fn texts(db: &DatabaseConnection, sql: &str) -> BTreeSet<String> {
    let rows = db
        .query_all_raw(Statement::from_string(DbBackend::Sqlite, sql))
        .await
        .unwrap();
    rows.iter()
        .map(|row| row.try_get_by_index::<String>(0).unwrap())
        .collect()
}

/// Read system calls this process made so far (`syscr` of `/proc/self/io`):
/// SQLite reads each page it does not hold in its cache with one `pread`.
fn read_syscalls() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    io.lines()
        .find_map(|line| line.strip_prefix("syscr:"))
        .expect("syscr")
        .trim()
        .parse()
        .expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_find_the_pages_they_change_in_their_connections_cache() {
    let database = TestDatabase::create(TestBackend::Sqlite)
        .await
        .expect("SQLite");
    let db = open(database.url()).await;
    // A table and a unique index of 30,000 rows, keys spread over the index.
    db.execute_unprepared(
        "CREATE TABLE grown (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE);
         WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 30000)
         INSERT INTO grown (key) SELECT hex(randomblob(12)) FROM n;
         PRAGMA wal_checkpoint(TRUNCATE);",
    )
    .await
    .expect("a grown table");
    // Every connection of the pool open and used for reads, so a write
    // begun on any of them would find a cache another write made stale.
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let db = db.clone();
        readers.spawn(async move {
            db.query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 200000)
                 SELECT count(*) FROM n, (SELECT count(*) FROM grown)",
            ))
            .await
            .expect("read")
        });
    }
    while let Some(read) = readers.join_next().await {
        read.expect("reader");
    }
    // The first write opens what it writes with and reads the trees once.
    let write = || async {
        let txn = begin_write(&db).await.expect("begin");
        txn.execute_unprepared("INSERT INTO grown (key) VALUES (hex(randomblob(12)))")
            .await
            .expect("insert");
        txn.commit().await.expect("commit");
    };
    write().await;
    let writes = 200;
    let before = read_syscalls();
    for _ in 0..writes {
        write().await;
        // A read on the pool between writes, as a service reads between them.
        db.query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT key FROM grown WHERE id = 17",
        ))
        .await
        .expect("read");
    }
    let reads = read_syscalls() - before;
    eprintln!("{reads} read calls for {writes} writes and {writes} reads");
    // Each write changes a leaf of the table and one of the index, each
    // under interior pages, and each read on the pool finds its cache stale after
    // the write before it. Writes begun on any pooled connection found theirs
    // stale too: about 1,830 read calls here (five or more pages a write,
    // about four a read). On a connection of their own, which keeps its
    // cache, the writes read nothing: about 760, the reads'.
    assert!(
        reads < writes * 5,
        "{reads} read calls for {writes} writes and {writes} reads"
    );
    let count = db
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT count(*) FROM grown",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap();
    assert_eq!(count, 30_000 + 1 + writes as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pool_writes_with_its_own_settings() {
    let database = TestDatabase::create(TestBackend::Sqlite)
        .await
        .expect("SQLite");
    let db = open(database.url()).await;
    // A second pool of the same file, not synchronous (as the migrating
    // connection is less so than the pool): it shares the file's gate, yet
    // its writes go with its own settings, and the first pool's with its.
    let relaxed = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::from_str(database.url())
                .expect("options")
                .synchronous(sqlx::sqlite::SqliteSynchronous::Off),
        )
        .await
        .expect("a second pool");
    let relaxed =
        marketbridge_storage::sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(relaxed);
    let synchronous_in_a_write = |db: DatabaseConnection| async move {
        let txn = begin_write(&db).await.expect("begin");
        let level = txn
            .query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                "PRAGMA synchronous",
            ))
            .await
            .expect("pragma")
            .expect("a row")
            .try_get_by_index::<i32>(0)
            .expect("a level");
        txn.execute_unprepared(
            "INSERT INTO written (id, writer, n) VALUES (hex(randomblob(8)), 0, 0)",
        )
        .await
        .expect("insert");
        txn.commit().await.expect("commit");
        level
    };
    for _ in 0..2 {
        assert_eq!(synchronous_in_a_write(db.clone()).await, 2, "FULL");
        assert_eq!(synchronous_in_a_write(relaxed.clone()).await, 0, "OFF");
    }
    // Once the second pool is gone, a new one of the same settings at the
    // same place writes with its own settings, not the dropped pool's.
    relaxed.close().await.expect("close");
    assert_eq!(synchronous_in_a_write(db.clone()).await, 2, "FULL");
    assert_eq!(
        texts(&db, "SELECT id FROM written").await.len(),
        5,
        "every write committed"
    );
}
