//! The row cache the services keep their hot rows in: a row read while a
//! change committed is not kept, a row is kept under each of its keys, and
//! on PostgreSQL the change trigger notifies updates, deletions and
//! truncations, never inserts, and the listener turns them into bumps.

use marketbridge_storage::row_cache::{self, RowCache};
use marketbridge_storage::sea_orm::ConnectionTrait;
use marketbridge_storage::sea_orm::sqlx::postgres::PgListener;
use marketbridge_storage::testing::{
    CACHE_PATIENCE, TestBackend, TestDatabase, run_on, until_cache_serves,
};
use marketbridge_storage::{backend_test, connect};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

const CHANNEL: &str = "marketbridge_test_notes";

backend_test!(
    a_row_is_kept_under_each_key_unless_a_change_committed_while_it_was_read,
    |database| async move {
        let db = connect(database.url()).await.unwrap();
        let cache: RowCache<String> = RowCache::new(&db, "note", 10);
        if database.backend() == TestBackend::Postgres {
            // No listener: it serves nothing (the listener is tested below).
            assert!(!cache.serving());
            assert!(cache.ticket().is_none());
            return;
        }
        let ticket = cache.ticket().expect("SQLite serves at once");
        let row = Arc::new("first".to_owned());
        cache.insert(["id:1".to_owned(), "name:first".to_owned()], row, ticket);
        let ticket = cache.ticket().unwrap();
        assert_eq!(
            cache.get("id:1", ticket).as_deref().map(String::as_str),
            Some("first")
        );
        assert_eq!(
            cache
                .get("name:first", ticket)
                .as_deref()
                .map(String::as_str),
            Some("first")
        );

        // A change committed between the ticket and the insert: not kept.
        let before_change = cache.ticket().unwrap();
        cache.bump();
        cache.insert(
            ["id:2".to_owned()],
            Arc::new("second".to_owned()),
            before_change,
        );
        let now = cache.ticket().unwrap();
        assert!(cache.get("id:2", now).is_none());
        // Everything read before the change is gone for reads after it.
        assert!(cache.get("id:1", now).is_none());

        // At capacity, a new key makes room.
        cache.set_capacity(2);
        let ticket = cache.ticket().unwrap();
        cache.insert(
            ["a".to_owned(), "b".to_owned()],
            Arc::new("ab".to_owned()),
            ticket,
        );
        cache.insert(["c".to_owned()], Arc::new("c".to_owned()), ticket);
        let kept = ["a", "b", "c"]
            .iter()
            .filter(|key| cache.get(key, ticket).is_some())
            .count();
        assert_eq!(kept, 2);
        assert!(cache.get("c", ticket).is_some());
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trigger_notifies_changes_but_not_inserts_and_the_listener_bumps() {
    run_on(TestBackend::Postgres, |database: TestDatabase| async move {
        let db = connect(database.url()).await.unwrap();
        db.execute_unprepared("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
            .await
            .unwrap();
        row_cache::notify_on_change(&db, "notes", CHANNEL)
            .await
            .unwrap();
        // Twice is harmless (a migration run again).
        row_cache::notify_on_change(&db, "notes", CHANNEL)
            .await
            .unwrap();

        let mut listener = PgListener::connect(database.url()).await.unwrap();
        listener.listen(CHANNEL).await.unwrap();
        for statement in [
            "INSERT INTO notes (id, body) VALUES (1, 'a'), (2, 'b')",
            "UPDATE notes SET body = 'c' WHERE id = 1",
            "INSERT INTO notes (id, body) VALUES (3, 'd')",
            "DELETE FROM notes WHERE id = 2",
            "TRUNCATE notes",
        ] {
            db.execute_unprepared(statement).await.unwrap();
        }
        let mut received = Vec::new();
        while received.len() < 3 {
            let notification = tokio::time::timeout(CACHE_PATIENCE, listener.recv())
                .await
                .expect("a notification")
                .unwrap();
            received.push(notification.payload().to_owned());
        }
        assert_eq!(
            received,
            ["UPDATE", "DELETE", "TRUNCATE"],
            "inserts notify nothing"
        );

        // The listener of a cache bumps its generation at each change.
        let cache = Arc::new(RowCache::<String>::new(&db, "note", 10));
        let stop = CancellationToken::new();
        let listening = tokio::spawn(row_cache::listen_for_changes(
            db.clone(),
            cache.clone(),
            CHANNEL,
            stop.clone(),
        ));
        until_cache_serves(&cache).await;
        let ticket = cache.ticket().unwrap();
        cache.insert(["id:1".to_owned()], Arc::new("c".to_owned()), ticket);
        let other = marketbridge_storage::sea_orm::Database::connect(database.url())
            .await
            .unwrap();
        other
            .execute_unprepared("INSERT INTO notes (id, body) VALUES (1, 'c')")
            .await
            .unwrap();
        other
            .execute_unprepared("UPDATE notes SET body = 'e' WHERE id = 1")
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + CACHE_PATIENCE;
        while cache.get("id:1", cache.ticket().unwrap()).is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "the update never emptied the cache"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        stop.cancel();
        listening.await.unwrap();
        assert!(!cache.serving());

        row_cache::stop_notifying_on_change(&db, "notes")
            .await
            .unwrap();
        db.execute_unprepared("UPDATE notes SET body = 'f'")
            .await
            .unwrap();
        db.execute_unprepared("SELECT pg_notify('marketbridge_test_notes', 'marker')")
            .await
            .unwrap();
        // What this listener heard since: the other connection's update,
        // then the marker; neither its insert nor the last update.
        let mut heard = Vec::new();
        loop {
            let next = tokio::time::timeout(CACHE_PATIENCE, listener.recv())
                .await
                .expect("the marker")
                .unwrap();
            if next.payload() == "marker" {
                break;
            }
            heard.push(next.payload().to_owned());
        }
        assert_eq!(heard, ["UPDATE"], "no trigger left");
        let _ = other.close().await;
    })
    .await;
}
