//! Inserts a write transaction holds for its commit
//! (`WriteTxn::insert_at_commit`): written together with the commit, all or
//! nothing, seen by the transaction's own later statements, never written
//! when it rolls back, on SQLite and PostgreSQL alike; on PostgreSQL a
//! transaction that only inserts sends them as one statement and no `BEGIN`.

use chrono::Utc;
use marketbridge_config::OutboxOptions;
use marketbridge_core::time::system_clock;
use marketbridge_proto::common::v1::MarketplaceRef;
use marketbridge_storage::idempotency::{Started, entity};
use marketbridge_storage::outbox::{NewJob, Outbox};
use marketbridge_storage::sea_orm::{
    DatabaseConnection, EntityTrait, PaginatorTrait, QueryTrait, Set,
};
use marketbridge_storage::sea_orm_migration::prelude::*;
use marketbridge_storage::testing::{
    TestBackend, open_with_shared_tables, record_statements, statement_counts, statements_between,
};
use marketbridge_storage::{
    Call, UnitOfWork, backend_test, begin_write, is_unique_violation, postgres_transactions_begun,
};

fn outbox(db: &DatabaseConnection) -> Outbox {
    Outbox::new(db.clone(), system_clock(), OutboxOptions::default())
}

/// The insert of a stored answer under `key` (a table every database has).
fn record(key: &str) -> InsertStatement {
    entity::Entity::insert(entity::ActiveModel {
        scope: Set("test.Deferred".to_owned()),
        key: Set(key.to_owned()),
        fingerprint: Set("f".to_owned()),
        response: Set(Vec::new()),
        subject: Set(None),
        created_at: Set(Utc::now()),
    })
    .into_query()
}

/// The request of the calls these tests make.
fn request() -> MarketplaceRef {
    MarketplaceRef {
        marketplace: 1,
        external_id: "x".into(),
    }
}

async fn records(db: &DatabaseConnection) -> u64 {
    entity::Entity::find().count(db).await.unwrap()
}

fn total(statements: &std::collections::BTreeMap<String, u64>) -> u64 {
    statements.values().sum()
}

backend_test!(
    the_inserts_of_a_call_are_one_statement_without_a_transaction_on_postgresql,
    |database| async move {
        record_statements();
        let db = open_with_shared_tables(&database).await;
        let outbox = outbox(&db);
        let request = request();
        let (statements, begun) = (statement_counts(), postgres_transactions_begun());
        let call = Call::new("test.Deferred", "key-1", &request, Utc::now());
        let Started::Fresh(mut work) = call.begin::<MarketplaceRef>(&db, &outbox).await.unwrap()
        else {
            panic!("a first call is no replay");
        };
        work.insert_at_commit(record("row-1"));
        work.enqueue_at_commit(NewJob::new("test.effect", &"x").unwrap());
        let answer = work.finish(request.clone()).await.unwrap();
        assert_eq!(answer, request);
        let sent = statements_between(&statements, &statement_counts());
        eprintln!("{sent:#?}");

        assert_eq!(records(&db).await, 2, "the row and the call's record");
        assert_eq!(outbox.jobs_of_kind("test.effect").await.unwrap().len(), 1);
        match database.backend() {
            TestBackend::Postgres => {
                // The check of the key, then the inserts as one.
                assert_eq!(total(&sent), 2, "{sent:#?}");
                assert_eq!(postgres_transactions_begun(), begun, "no BEGIN");
            }
            // The transaction's check of the key, then the inserts in one
            // call (one text of three statements).
            TestBackend::Sqlite => {
                assert_eq!(total(&sent), 2, "{sent:#?}");
                assert!(
                    sent.keys()
                        .any(|sql| sql.matches("INSERT INTO").count() == 3),
                    "{sent:#?}"
                );
            }
        }

        // The replay of the call answers from its record, acting no more.
        let mut call = Call::new("test.Deferred", "key-1", &request, Utc::now());
        assert_eq!(
            call.replayed::<MarketplaceRef>(&db).await.unwrap(),
            Some(request)
        );
        assert_eq!(outbox.jobs_of_kind("test.effect").await.unwrap().len(), 1);
    }
);

backend_test!(
    a_call_checked_before_it_begins_is_checked_once_on_postgresql_and_an_identical_call_committed_meanwhile_wins,
    |database| async move {
        record_statements();
        let db = open_with_shared_tables(&database).await;
        let outbox = outbox(&db);
        let request = request();
        let answer_of = |who: &str| MarketplaceRef {
            marketplace: 1,
            external_id: who.to_owned(),
        };

        // A call checked before it begins, then finished: one check of its
        // key on PostgreSQL.
        let statements = statement_counts();
        let mut call = Call::new("test.Checked", "key-1", &request, Utc::now());
        assert_eq!(call.replayed::<MarketplaceRef>(&db).await.unwrap(), None);
        let Started::Fresh(work) = call.begin::<MarketplaceRef>(&db, &outbox).await.unwrap()
        else {
            panic!("a first call is no replay");
        };
        work.insert_at_commit(record("row-1"));
        assert_eq!(work.finish(answer_of("first")).await.unwrap(), answer_of("first"));
        let sent = statements_between(&statements, &statement_counts());
        match database.backend() {
            // The check, then the row and the record as one statement.
            TestBackend::Postgres => assert_eq!(total(&sent), 2, "{sent:#?}"),
            // The check, again inside the transaction, then the row and
            // the record in one call.
            TestBackend::Sqlite => assert_eq!(total(&sent), 3, "{sent:#?}"),
        }

        // Two identical calls: the second is checked first, then the first
        // runs to its commit, then the second begins and finishes.
        let mut late = Call::new("test.Checked", "key-2", &request, Utc::now());
        assert_eq!(late.replayed::<MarketplaceRef>(&db).await.unwrap(), None);
        let early = Call::new("test.Checked", "key-2", &request, Utc::now());
        let Started::Fresh(work) = early.begin::<MarketplaceRef>(&db, &outbox).await.unwrap()
        else {
            panic!("a first call is no replay");
        };
        work.insert_at_commit(record("early"));
        work.finish(answer_of("early")).await.unwrap();
        let answer = match late.begin::<MarketplaceRef>(&db, &outbox).await.unwrap() {
            // PostgreSQL does not check again: the key's record makes the
            // commit fail, and the early call's answer is given.
            Started::Fresh(work) => {
                assert_eq!(database.backend(), TestBackend::Postgres);
                work.insert_at_commit(record("late"));
                work.finish(answer_of("late")).await.unwrap()
            }
            // SQLite checks again inside its transaction.
            Started::Replay(answer) => {
                assert_eq!(database.backend(), TestBackend::Sqlite);
                answer
            }
        };
        assert_eq!(answer, answer_of("early"));
        let keys: Vec<String> = entity::Entity::find()
            .all(&db)
            .await
            .unwrap()
            .into_iter()
            .map(|row| row.key)
            .collect();
        assert!(keys.contains(&"early".to_owned()), "{keys:?}");
        assert!(!keys.contains(&"late".to_owned()), "nothing of the late call: {keys:?}");
    }
);

backend_test!(
    a_statement_of_the_transaction_sees_the_inserts_held_before_it,
    |database| async move {
        let db = open_with_shared_tables(&database).await;
        let outbox = outbox(&db);
        let mut work = UnitOfWork::begin(&db, &outbox).await.unwrap();
        work.insert_at_commit(record("seen"));
        work.enqueue_at_commit(NewJob::new("test.effect", &"x").unwrap());
        // Read in the transaction: the held inserts go first.
        assert_eq!(entity::Entity::find().count(&*work).await.unwrap(), 1);
        work.insert_at_commit(record("after"));
        // Not yet committed: another connection sees nothing.
        assert_eq!(records(&db).await, 0);
        work.commit().await.unwrap();
        assert_eq!(records(&db).await, 2);
        assert_eq!(outbox.jobs_of_kind("test.effect").await.unwrap().len(), 1);
    }
);

backend_test!(
    inserts_held_for_the_commit_are_written_all_or_nothing,
    |database| async move {
        let db = open_with_shared_tables(&database).await;
        // Alone: the second insert of one key fails the commit, and the
        // first is not kept.
        let txn = begin_write(&db).await.unwrap();
        txn.insert_at_commit(record("a"));
        txn.insert_at_commit(record("b"));
        txn.insert_at_commit(record("a"));
        let error = txn.commit().await.unwrap_err();
        assert!(is_unique_violation(&error), "{error}");
        assert_eq!(records(&db).await, 0);

        // More than one statement carries (200 inserts): still one
        // transaction, so a duplicate at the end undoes the rest.
        let txn = begin_write(&db).await.unwrap();
        for index in 0..200 {
            txn.insert_at_commit(record(&format!("k{index}")));
        }
        txn.insert_at_commit(record("k0"));
        assert!(txn.commit().await.is_err());
        assert_eq!(records(&db).await, 0);

        // After a statement began the transaction: the same.
        let txn = begin_write(&db).await.unwrap();
        assert_eq!(entity::Entity::find().count(&txn).await.unwrap(), 0);
        txn.insert_at_commit(record("c"));
        txn.insert_at_commit(record("c"));
        assert!(txn.commit().await.is_err());
        assert_eq!(records(&db).await, 0);

        // And 200 distinct ones are all written.
        let txn = begin_write(&db).await.unwrap();
        for index in 0..200 {
            txn.insert_at_commit(record(&format!("k{index}")));
        }
        txn.commit().await.unwrap();
        assert_eq!(records(&db).await, 200);
    }
);

backend_test!(
    inserts_held_by_a_transaction_that_rolls_back_are_never_written,
    |database| async move {
        let db = open_with_shared_tables(&database).await;
        let txn = begin_write(&db).await.unwrap();
        txn.insert_at_commit(record("rolled-back"));
        txn.rollback().await.unwrap();
        let txn = begin_write(&db).await.unwrap();
        txn.insert_at_commit(record("dropped"));
        drop(txn);
        // Begun by a read, then rolled back.
        let txn = begin_write(&db).await.unwrap();
        txn.insert_at_commit(record("read-then-rolled-back"));
        assert_eq!(entity::Entity::find().count(&txn).await.unwrap(), 1);
        txn.rollback().await.unwrap();
        assert_eq!(records(&db).await, 0);
    }
);

backend_test!(
    reads_before_writes_begin_no_transaction_on_postgresql,
    |database| async move {
        let db = open_with_shared_tables(&database).await;
        let txn = begin_write(&db).await.unwrap();
        txn.insert_at_commit(record("before"));
        txn.commit().await.unwrap();

        let begun = postgres_transactions_begun();
        let txn = begin_write(&db).await.unwrap();
        let reads = txn.reads_before_writes();
        assert_eq!(entity::Entity::find().count(&reads).await.unwrap(), 1);
        txn.insert_at_commit(record("after"));
        txn.commit().await.unwrap();
        assert_eq!(records(&db).await, 2);
        let postgres = database.backend() == TestBackend::Postgres;
        if postgres {
            assert_eq!(postgres_transactions_begun(), begun, "no BEGIN");
        }

        // A read through the transaction itself begins it.
        let txn = begin_write(&db).await.unwrap();
        assert_eq!(entity::Entity::find().count(&txn).await.unwrap(), 2);
        // Once begun, reads before writes are the transaction's.
        txn.insert_at_commit(record("third"));
        assert_eq!(
            entity::Entity::find()
                .count(&txn.reads_before_writes())
                .await
                .unwrap(),
            3
        );
        txn.commit().await.unwrap();
        if postgres {
            assert_eq!(postgres_transactions_begun(), begun + 1);
        }
    }
);

backend_test!(
    a_job_held_for_the_commit_keeps_to_its_dedupe_key,
    |database| async move {
        let db = open_with_shared_tables(&database).await;
        let outbox = outbox(&db);
        let job = |key: &str| NewJob::new("test.effect", &key).unwrap().dedupe_key(key);
        outbox.enqueue(&db, job("there")).await.unwrap();
        // One already stored, two of one key in the same statement: each
        // key stays one job, and the commit succeeds.
        let mut work = UnitOfWork::begin(&db, &outbox).await.unwrap();
        work.enqueue_at_commit(job("there"));
        work.enqueue_at_commit(job("new"));
        work.enqueue_at_commit(job("new"));
        work.commit().await.unwrap();
        let mut keys: Vec<Option<String>> = outbox
            .jobs_of_kind("test.effect")
            .await
            .unwrap()
            .into_iter()
            .map(|row| row.dedupe_key)
            .collect();
        keys.sort();
        assert_eq!(keys, [Some("new".to_owned()), Some("there".to_owned())]);
    }
);
