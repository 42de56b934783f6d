//! SQLite group commit: writers of one process share one durable
//! (`synchronous = FULL`) commit, a writer that fails or goes away takes only
//! its own writes with it, and every acknowledged write survives the process
//! being killed.

use marketbridge_storage::sea_orm::{
    self, ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait,
};
use marketbridge_storage::testing::{TestBackend, TestDatabase, acknowledged_before_sigkill};
use marketbridge_storage::{
    begin_write, connect, db_error, is_unique_violation, sqlite_group_commits,
    sqlite_writers_waiting, write_gate, write_once,
};
use std::collections::BTreeSet;
use std::io::Write;

async fn open(url: &str) -> DatabaseConnection {
    let db = connect(url).await.expect("connect");
    db.execute_unprepared("CREATE TABLE IF NOT EXISTS written (id TEXT PRIMARY KEY)")
        .await
        .expect("table");
    db
}

async fn fresh() -> (TestDatabase, DatabaseConnection) {
    let database = TestDatabase::create(TestBackend::Sqlite)
        .await
        .expect("SQLite");
    let db = open(database.url()).await;
    (database, db)
}

async fn insert(
    conn: &impl ConnectionTrait,
    id: &str,
) -> Result<(), marketbridge_storage::sea_orm::DbErr> {
    conn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Sqlite,
        "INSERT INTO written (id) VALUES (?1)",
        [id.into()],
    ))
    .await
    .map(|_| ())
}

async fn written(conn: &impl ConnectionTrait) -> BTreeSet<String> {
    conn.query_all_raw(Statement::from_string(
        DbBackend::Sqlite,
        "SELECT id FROM written",
    ))
    .await
    .expect("read")
    .iter()
    .map(|row| row.try_get::<String>("", "id").expect("id"))
    .collect()
}

/// Waits until `count` writers queue at the gate of `db` (no timing is
/// asserted: it only lets the spawned writers reach the queue).
async fn until_waiting(db: &DatabaseConnection, count: usize) {
    for _ in 0..20_000 {
        if sqlite_writers_waiting(db) == Some(count) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!(
        "{count} writers never queued (waiting: {:?})",
        sqlite_writers_waiting(db)
    );
}

/// Asserts the table holds exactly `expected`, and that nothing was left
/// open: a writer takes the write lock at once.
async fn holds_then_takes_a_writer(db: &DatabaseConnection, expected: &[&str]) {
    let expected: BTreeSet<String> = expected.iter().map(|id| (*id).to_owned()).collect();
    assert_eq!(written(db).await, expected);
    let txn = begin_write(db).await.expect("begin");
    insert(&txn, "after").await.expect("insert");
    txn.commit().await.expect("commit");
    assert!(written(db).await.contains("after"));
}

/// A pragma's value as the connection `conn` runs on reports it.
async fn pragma<T: sea_orm::TryGetable>(conn: &impl ConnectionTrait, name: &str) -> T {
    conn.query_one_raw(Statement::from_string(
        DbBackend::Sqlite,
        format!("PRAGMA {name}"),
    ))
    .await
    .expect("pragma")
    .expect("a row")
    .try_get_by_index::<T>(0)
    .expect("value")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_commits_are_fsynced() {
    let (_database, db) = fresh().await;
    // 2 is FULL: every commit is fsynced before it returns.
    assert_eq!(pragma::<i32>(&db, "synchronous").await, 2);
    assert_eq!(pragma::<String>(&db, "journal_mode").await, "wal");
}

/// Every pooled connection keeps temporary storage in memory, the journal of
/// a group commit's per-writer savepoints included (by default it spilled to
/// a temporary file, created and deleted once per group).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_temporary_storage_in_memory() {
    const CONNECTIONS: usize = 4;
    let (_database, db) = fresh().await;
    // Transactions held side by side, so each asks on a connection of its own.
    let mut open = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        open.push(db.begin().await.expect("a transaction"));
    }
    for txn in &open {
        // 2 is MEMORY.
        assert_eq!(pragma::<i32>(txn, "temp_store").await, 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_group_commits() {
    const WRITERS: usize = 200;
    let (_database, db) = fresh().await;
    let before = sqlite_group_commits(&db).expect("SQLite counts group commits");
    // The writers queue while the gate is held, then write one after the
    // other, each passing its group on to the next.
    let held = write_gate(&db).await.expect("the gate");
    let mut writers = tokio::task::JoinSet::new();
    for n in 0..WRITERS {
        let db = db.clone();
        writers.spawn(async move {
            let id = format!("w{n}");
            if n % 2 == 0 {
                let txn = begin_write(&db).await?;
                insert(&txn, &id).await.map_err(db_error)?;
                txn.commit().await.map_err(db_error)?;
            } else {
                let write = write_once(&db).await?;
                insert(&write, &id).await.map_err(db_error)?;
                write.commit().await?;
            }
            Ok::<_, marketbridge_core::Error>(id)
        });
    }
    until_waiting(&db, WRITERS).await;
    drop(held);
    let mut acknowledged = BTreeSet::new();
    while let Some(done) = writers.join_next().await {
        acknowledged.insert(done.expect("writer").expect("every write commits"));
    }
    assert_eq!(acknowledged.len(), WRITERS);
    assert_eq!(written(&db).await, acknowledged);
    let groups = sqlite_group_commits(&db).expect("count") - before;
    assert!(groups >= 1, "the writes were committed");
    assert!(
        groups < WRITERS as u64,
        "{WRITERS} writers took {groups} commits: they were not grouped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_that_write_nothing_leave_their_group_whole() {
    // Writers that end without sending a statement (committed, rolled back,
    // dropped) and one dropped after writing must neither break the group
    // nor take another writer's writes with them.
    let (_database, db) = fresh().await;
    let held = write_gate(&db).await.expect("the gate");
    let mut writers = tokio::task::JoinSet::new();
    for (n, end) in [
        "write",
        "commit",
        "rollback",
        "drop",
        "write",
        "drop-after-write",
        "write",
    ]
    .into_iter()
    .enumerate()
    {
        let conn = db.clone();
        writers.spawn(async move {
            let txn = begin_write(&conn).await?;
            let id = format!("{end}-{n}");
            match end {
                "write" => {
                    insert(&txn, &id).await.map_err(db_error)?;
                    txn.commit().await.map_err(db_error)?;
                }
                "commit" => txn.commit().await.map_err(db_error)?,
                "rollback" => txn.rollback().await.map_err(db_error)?,
                "drop-after-write" => {
                    insert(&txn, &id).await.map_err(db_error)?;
                    drop(txn);
                }
                _ => drop(txn),
            }
            Ok::<_, marketbridge_core::Error>(())
        });
        until_waiting(&db, n + 1).await;
    }
    drop(held);
    while let Some(done) = writers.join_next().await {
        done.expect("writer").expect("every writer ends cleanly");
    }
    holds_then_takes_a_writer(&db, &["write-0", "write-4", "write-6"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_writer_is_told_exactly_the_rows_it_changed() {
    // Writers of one group follow each other on one connection, and SQLite
    // reports a statement that changes nothing (a savepoint) with the count
    // of the last one that did: a writer's count must be its own.
    let (_database, db) = fresh().await;
    let update = |conn: &'static str| {
        Statement::from_string(
            DbBackend::Sqlite,
            format!("UPDATE written SET id = id WHERE id LIKE '{conn}%'"),
        )
    };
    let held = write_gate(&db).await.expect("the gate");
    let mut writers = tokio::task::JoinSet::new();
    for n in 0..4 {
        let conn = db.clone();
        writers.spawn(async move {
            let txn = begin_write(&conn).await?;
            let counted = match n {
                // Changes three rows.
                0 => {
                    for id in ["a1", "a2", "a3"] {
                        insert(&txn, id).await.map_err(db_error)?;
                    }
                    txn.execute_raw(update("a"))
                        .await
                        .map_err(db_error)?
                        .rows_affected()
                }
                // A first statement that changes nothing.
                1 => txn
                    .execute_raw(update("none"))
                    .await
                    .map_err(db_error)?
                    .rows_affected(),
                // A query first (the savepoint goes with it), then a write.
                2 => {
                    written(&txn).await;
                    txn.execute_raw(update("a1"))
                        .await
                        .map_err(db_error)?
                        .rows_affected()
                }
                // A write whose rows come back.
                _ => txn
                    .query_all_raw(Statement::from_string(
                        DbBackend::Sqlite,
                        "UPDATE written SET id = id WHERE id IN ('a2', 'a3') RETURNING id",
                    ))
                    .await
                    .map_err(db_error)?
                    .len() as u64,
            };
            txn.commit().await.map_err(db_error)?;
            Ok::<_, marketbridge_core::Error>((n, counted))
        });
        until_waiting(&db, n + 1).await;
    }
    drop(held);
    let mut counts = std::collections::BTreeMap::new();
    while let Some(done) = writers.join_next().await {
        let (n, counted) = done.expect("writer").expect("every writer commits");
        counts.insert(n, counted);
    }
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [(0, 3), (1, 0), (2, 1), (3, 2)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_writes_take_their_turn_before_longer_writers_waiting() {
    const LONG: usize = 6;
    let (_database, db) = fresh().await;
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let held = write_gate(&db).await.expect("the gate");
    let mut writers = tokio::task::JoinSet::new();
    // Transactions queue first, then one short write; each notes when its
    // turn came.
    for n in 0..=LONG {
        let (conn, order) = (db.clone(), order.clone());
        let id = if n < LONG {
            format!("long{n}")
        } else {
            "short".to_owned()
        };
        writers.spawn(async move {
            if n < LONG {
                let txn = begin_write(&conn).await?;
                order.lock().unwrap().push(id.clone());
                insert(&txn, &id).await.map_err(db_error)?;
                txn.commit().await.map_err(db_error)?;
            } else {
                let write = write_once(&conn).await?;
                order.lock().unwrap().push(id.clone());
                insert(&write, &id).await.map_err(db_error)?;
                write.commit().await?;
            }
            Ok::<_, marketbridge_core::Error>(id)
        });
        until_waiting(&db, n + 1).await;
    }
    drop(held);
    while let Some(done) = writers.join_next().await {
        done.expect("writer").expect("every write commits");
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(
        order.first().map(String::as_str),
        Some("short"),
        "{order:?}"
    );
    let longs: Vec<String> = (0..LONG).map(|n| format!("long{n}")).collect();
    assert_eq!(order[1..], longs[..], "the longer writers keep their order");
    assert_eq!(written(&db).await.len(), LONG + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_writer_leaves_the_rest_of_its_group_committed() {
    let (_database, db) = fresh().await;
    {
        let txn = begin_write(&db).await.expect("begin");
        insert(&txn, "taken").await.expect("insert");
        txn.commit().await.expect("commit");
    }
    let held = write_gate(&db).await.expect("the gate");
    let mut queued = 0;
    // Each writer is in the queue before the next one is spawned.
    let mut queue = async || {
        queued += 1;
        until_waiting(&db, queued).await;
    };
    // Commits.
    let first = {
        let db = db.clone();
        let task = tokio::spawn(async move {
            let txn = begin_write(&db).await.map_err(|e| e.to_string())?;
            insert(&txn, "first").await.map_err(|e| e.to_string())?;
            txn.commit().await.map_err(|e| e.to_string())
        });
        queue().await;
        task
    };
    // Rolls back.
    let rolled_back = {
        let db = db.clone();
        let task = tokio::spawn(async move {
            let txn = begin_write(&db).await.map_err(|e| e.to_string())?;
            insert(&txn, "rolled-back")
                .await
                .map_err(|e| e.to_string())?;
            txn.rollback().await.map_err(|e| e.to_string())
        });
        queue().await;
        task
    };
    // Meets a unique violation, handles it and goes on.
    let conflicted = {
        let db = db.clone();
        let task = tokio::spawn(async move {
            let txn = begin_write(&db).await.map_err(|e| e.to_string())?;
            insert(&txn, "before-conflict")
                .await
                .map_err(|e| e.to_string())?;
            match insert(&txn, "taken").await {
                Err(error) if is_unique_violation(&error) => {}
                other => return Err(format!("expected a unique violation, got {other:?}")),
            }
            insert(&txn, "after-conflict")
                .await
                .map_err(|e| e.to_string())?;
            txn.commit().await.map_err(|e| e.to_string())
        });
        queue().await;
        task
    };
    // Fails and returns early: its transaction is dropped uncommitted.
    let failed = {
        let db = db.clone();
        let task = tokio::spawn(async move {
            let txn = begin_write(&db).await.map_err(|e| e.to_string())?;
            insert(&txn, "failed").await.map_err(|e| e.to_string())?;
            txn.execute_unprepared("INSERT INTO no_such_table VALUES (1)")
                .await
                .map_err(|e| e.to_string())?;
            txn.commit().await.map_err(|e| e.to_string())
        });
        queue().await;
        task
    };
    // Writes, then is cancelled while it holds the turn.
    let (wrote, has_written) = tokio::sync::oneshot::channel::<()>();
    let cancelled = {
        let db = db.clone();
        let task = tokio::spawn(async move {
            let txn = begin_write(&db).await.map_err(|e| e.to_string())?;
            insert(&txn, "cancelled").await.map_err(|e| e.to_string())?;
            let _ = wrote.send(());
            std::future::pending::<()>().await;
            txn.commit().await.map_err(|e| e.to_string())
        });
        queue().await;
        task
    };
    // Commits last.
    let last = {
        let db = db.clone();
        let task = tokio::spawn(async move {
            let write = write_once(&db).await.map_err(|e| e.to_string())?;
            insert(&write, "last").await.map_err(|e| e.to_string())?;
            write.commit().await.map_err(|e| e.to_string())
        });
        queue().await;
        task
    };
    drop(held);
    has_written.await.expect("the cancelled writer wrote");
    cancelled.abort();
    assert!(cancelled.await.expect_err("cancelled").is_cancelled());

    assert_eq!(first.await.expect("task"), Ok(()));
    assert_eq!(rolled_back.await.expect("task"), Ok(()));
    assert_eq!(conflicted.await.expect("task"), Ok(()));
    let error = failed
        .await
        .expect("task")
        .expect_err("the failing writer fails");
    assert!(error.contains("no_such_table"), "{error}");
    assert_eq!(last.await.expect("task"), Ok(()));

    holds_then_takes_a_writer(
        &db,
        &[
            "taken",
            "first",
            "before-conflict",
            "after-conflict",
            "last",
        ],
    )
    .await;
}

/// Set in the child process: the database it writes to.
const CHILD_ENV: &str = "MARKETBRIDGE_TEST_GROUP_COMMIT_CHILD_DB";

/// The child: many writers commit rows as fast as they can and print
/// `ack <id>` once each commit returned, until killed.
async fn child(url: &str) -> ! {
    let db = connect(url).await.expect("connect");
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..32 {
        let db = db.clone();
        writers.spawn(async move {
            for n in 0.. {
                let id = format!("{writer}-{n}");
                let txn = begin_write(&db).await.expect("begin");
                insert(&txn, &id).await.expect("insert");
                // A second statement, so a torn group would show.
                insert(&txn, &format!("{id}-b")).await.expect("insert");
                txn.commit().await.expect("commit");
                // Printed at once, so the parent's kill lands close behind.
                let mut stdout = std::io::stdout().lock();
                writeln!(stdout, "ack {id}").expect("stdout");
                stdout.flush().expect("stdout");
            }
        });
    }
    while writers.join_next().await.is_some() {}
    unreachable!("the writers never stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_group_commits_survive_a_sigkill() {
    if let Ok(url) = std::env::var(CHILD_ENV) {
        child(&url).await;
    }
    let (database, db) = fresh().await;
    db.close().await.expect("close");

    // Read acknowledgements until 1000, then kill the child mid-stream.
    let acked = acknowledged_before_sigkill(
        "acknowledged_group_commits_survive_a_sigkill",
        (CHILD_ENV, database.url()),
        1000,
    )
    .await;

    let db = connect(database.url()).await.expect("reopen");
    let integrity = db
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            "PRAGMA integrity_check",
        ))
        .await
        .expect("integrity check");
    let integrity: Vec<String> = integrity
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("line"))
        .collect();
    assert_eq!(integrity, ["ok"]);
    let written = written(&db).await;
    let lost: Vec<&String> = acked
        .iter()
        .filter(|id| !written.contains(*id) || !written.contains(&format!("{id}-b")))
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    // Every writer's two rows are kept together or not at all.
    let torn: Vec<&String> = written
        .iter()
        .filter(|id| !id.ends_with("-b") && !written.contains(&format!("{id}-b")))
        .collect();
    assert!(torn.is_empty(), "writes kept without their pair: {torn:?}");
}

#[test]
fn a_runtime_shutting_down_with_a_group_open_ends_it_cleanly() {
    // A task still writing when its runtime shuts down is dropped by the
    // shutdown; its turn then hands the open group to a commit task, which
    // a shutting-down runtime drops without running. That must end the
    // group (rolled back) rather than hand it to yet another task.
    let database = {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime
            .block_on(TestDatabase::create(TestBackend::Sqlite))
            .expect("SQLite")
    };
    for pass in 0..20 {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let db = runtime.block_on(open(database.url()));
        let (wrote, has_written) = tokio::sync::oneshot::channel::<()>();
        let writer_db = db.clone();
        runtime.spawn(async move {
            let txn = begin_write(&writer_db).await.expect("begin");
            insert(&txn, &format!("w{pass}")).await.expect("insert");
            let _ = wrote.send(());
            std::future::pending::<()>().await;
            drop(txn);
        });
        runtime.block_on(has_written).expect("the writer wrote");
        drop(runtime);
    }
    // Nothing any of them wrote was committed, and the file takes writers.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let db = open(database.url()).await;
        holds_then_takes_a_writer(&db, &[]).await;
    });
}
