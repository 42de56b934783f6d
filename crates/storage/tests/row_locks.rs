//! Row locks are taken only where they hold: `locked_in` locks the rows a
//! write transaction re-reads (`FOR UPDATE` on PostgreSQL), and leaves a read
//! on the pool plain, where a lock would protect nothing and cost
//! PostgreSQL a transaction id and a flushed commit per read.

use chrono::Utc;
use marketbridge_storage::idempotency::entity;
use marketbridge_storage::sea_orm::{EntityTrait, QueryTrait, Set};
use marketbridge_storage::sea_orm_migration::prelude::*;
use marketbridge_storage::testing::{
    TestBackend, open_with_shared_tables, record_statements, statement_counts, statements_between,
};
use marketbridge_storage::{backend_test, begin_write, locked_in};
use std::time::Duration;

fn row() -> InsertStatement {
    entity::Entity::insert(entity::ActiveModel {
        scope: Set("test.Locks".to_owned()),
        key: Set("k".to_owned()),
        fingerprint: Set("f".to_owned()),
        response: Set(Vec::new()),
        subject: Set(None),
        created_at: Set(Utc::now()),
    })
    .into_query()
}

fn the_row() -> marketbridge_storage::sea_orm::Select<entity::Entity> {
    entity::Entity::find_by_id(("test.Locks".to_owned(), "k".to_owned()))
}

/// Gives up on a read that waits for a lock (none should, below).
const PATIENCE: Duration = Duration::from_secs(10);

backend_test!(
    reads_lock_rows_in_a_write_transaction_only,
    |database| async move {
        record_statements();
        let db = open_with_shared_tables(&database).await;
        let txn = begin_write(&db).await.unwrap();
        txn.insert_at_commit(row());
        txn.commit().await.unwrap();

        // On the pool: a plain read.
        let before = statement_counts();
        let read = locked_in(the_row(), &db).one(&db).await.unwrap();
        assert!(read.is_some());
        let sent = statements_between(&before, &statement_counts());
        assert!(
            sent.keys().all(|sql| !sql.contains("FOR UPDATE")),
            "a read on the pool locks nothing: {sent:#?}"
        );

        if database.backend() == TestBackend::Postgres {
            // A writer holds the row locked; a read on the pool still
            // answers at once, and another writer's locked read waits for
            // the first writer's commit.
            let writer = begin_write(&db).await.unwrap();
            let held = locked_in(the_row(), &writer).one(&writer).await.unwrap();
            assert!(held.is_some());
            let plain = tokio::time::timeout(PATIENCE, locked_in(the_row(), &db).one(&db))
                .await
                .expect("a read on the pool does not wait for a lock")
                .unwrap();
            assert!(plain.is_some());
            let second = tokio::spawn({
                let db = db.clone();
                async move {
                    let other = begin_write(&db).await.unwrap();
                    let row = locked_in(the_row(), &other).one(&other).await.unwrap();
                    other.commit().await.unwrap();
                    row
                }
            });
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(
                !second.is_finished(),
                "the second writer waits for the lock"
            );
            writer.commit().await.unwrap();
            assert!(second.await.unwrap().is_some());
        }
    }
);
