//! The account cache: `GetAccount` is answered from memory between changes,
//! by our id and by the marketplace's alike, and every change (a call's,
//! a marketplace's refusal recorded on its own, another replica's, one made
//! by hand) is visible on the next read.

use marketbridge_account::AccountServer;
use marketbridge_account::convert::account_key;
use marketbridge_account::model::AccountKey;
use marketbridge_proto::account::v1 as pb;
use marketbridge_proto::common::v1::{AccountSelector, Marketplace, MarketplaceRef};
use marketbridge_storage::sea_orm::ConnectionTrait;
use marketbridge_storage::testing::{
    TestBackend, TestDatabase, read_from_cache, record_statements, run_on, spelled_otherwise,
    until_cache_serves, until_read,
};
use marketbridge_storage::{backend_test, changes};
use tokio_util::sync::CancellationToken;

mod support;

/// A server whose cache serves, with its change listener (PostgreSQL)
/// running until `stop`; statements are recorded.
async fn serving(url: &str, stop: &CancellationToken) -> AccountServer {
    record_statements();
    let server = support::open(url).await;
    server.spawn_change_listener(stop.clone());
    until_cache_serves(server.domain().account_cache()).await;
    server
}

fn by_ref(external_id: &str) -> AccountKey {
    account_key(Some(&AccountSelector::by_ref(
        Marketplace::Vercel,
        external_id,
    )))
    .unwrap()
}

fn by_id(account: &pb::Account) -> AccountKey {
    account_key(Some(&AccountSelector::by_id(&account.id))).unwrap()
}

async fn upsert(server: &AccountServer, external_id: &str, name: &str) -> pb::Account {
    server
        .domain()
        .upsert(pb::UpsertAccountRequest {
            marketplace_ref: Some(MarketplaceRef::new(Marketplace::Vercel, external_id)),
            display_name: name.into(),
            ..Default::default()
        })
        .await
        .unwrap()
}

async fn get(server: &AccountServer, key: &AccountKey) -> pb::Account {
    server.domain().get(key).await.unwrap()
}

/// Reads `key` until a read comes from the cache; returns what it read.
async fn read_cached(server: &AccountServer, key: &AccountKey) -> pb::Account {
    read_from_cache(server.domain().account_cache(), || get(server, key)).await
}

backend_test!(
    an_account_is_read_from_memory_until_it_changes,
    |database| async move {
        let stop = CancellationToken::new();
        let server = serving(database.url(), &stop).await;
        let cache = server.domain().account_cache();
        let created = upsert(&server, "icfg_cached", "first").await;
        let installation = by_ref("icfg_cached");

        // Read by the marketplace's id, then by ours: one row, kept under
        // both.
        let cached = read_cached(&server, &installation).await;
        assert_eq!(cached, created);
        let hits = cache.hits();
        assert_eq!(get(&server, &by_id(&created)).await, created);
        assert_eq!(cache.hits(), hits + 1, "kept under our id as well");
        // Another account is never answered with it.
        let other = upsert(&server, "icfg_other", "other").await;
        assert_eq!(read_cached(&server, &by_ref("icfg_other")).await, other);
        assert_eq!(read_cached(&server, &installation).await, created);
        let unknown = server.domain().get(&by_ref("icfg_unknown")).await;
        assert_eq!(
            unknown.unwrap_err().code(),
            marketbridge_core::ErrorCode::NotFound
        );

        // A call's change is seen at once.
        let renamed = upsert(&server, "icfg_cached", "renamed").await;
        assert_eq!(renamed.display_name, "renamed");
        assert_eq!(get(&server, &installation).await, renamed);
        assert_eq!(get(&server, &by_id(&created)).await, renamed);

        // A marketplace's refusal, recorded in a transaction of its own.
        assert_eq!(read_cached(&server, &by_id(&created)).await, renamed);
        let gone = server
            .domain()
            .mark_gone(
                &installation,
                pb::MarkMarketplaceGoneRequest {
                    reason: "410 Gone".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(gone.marketplace_gone_at.is_some());
        assert_eq!(get(&server, &by_id(&created)).await, gone);
        assert_eq!(get(&server, &installation).await, gone);

        // Off: every read goes to the database.
        cache.set_capacity(0);
        assert!(!cache.serving());
        let (hits, misses) = (cache.hits(), cache.misses());
        for _ in 0..3 {
            assert_eq!(get(&server, &installation).await, gone);
        }
        assert_eq!((cache.hits(), cache.misses()), (hits, misses));
        stop.cancel();
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replicas_changes_reach_the_account_cache_on_postgres() {
    run_on(TestBackend::Postgres, |database: TestDatabase| async move {
        record_statements();
        let first = support::open(database.url()).await;
        let second = support::open(&spelled_otherwise(database.url())).await;
        assert_ne!(
            changes::identity(first.domain().db()),
            changes::identity(second.domain().db()),
            "the replicas must not share a generation, or this test proves nothing"
        );
        let created = upsert(&second, "icfg_replicas", "first").await;
        let installation = by_ref("icfg_replicas");

        // Not listening yet: no cache.
        let cache = first.domain().account_cache();
        assert!(!cache.serving());
        get(&first, &installation).await;
        get(&first, &installation).await;
        assert_eq!(cache.hits(), 0, "no hit while the listener does not listen");

        let stop = CancellationToken::new();
        let listener = first
            .spawn_change_listener(stop.clone())
            .expect("a listener on PostgreSQL");
        until_cache_serves(cache).await;
        assert_eq!(read_cached(&first, &installation).await, created);

        // A change through the other replica's API.
        upsert(&second, "icfg_replicas", "from the other replica").await;
        until_read(
            "the other replica's change",
            || get(&first, &installation),
            |read| read.display_name == "from the other replica",
        )
        .await;

        // A change by hand, outside any service.
        let ours = by_id(&created);
        read_cached(&first, &ours).await;
        let admin = marketbridge_storage::sea_orm::Database::connect(database.url())
            .await
            .unwrap();
        admin
            .execute_unprepared(&format!(
                "UPDATE accounts SET display_name = 'by hand' WHERE id = '{}'",
                created.id
            ))
            .await
            .unwrap();
        until_read(
            "the change by hand",
            || get(&first, &ours),
            |read| read.display_name == "by hand",
        )
        .await;
        let _ = admin.close().await;

        // Stopped: the listener ends and the cache no longer serves.
        stop.cancel();
        listener.await.unwrap();
        assert!(!cache.serving());
    })
    .await;
}
