//! The resource cache: single-resource reads are answered from memory, and
//! every change (a call's, a job's, another replica's) is visible on the next
//! read; a cached row never reaches another account.

use marketbridge_core::ErrorCode;
use marketbridge_core::crypto::Cipher;
use marketbridge_core::ids::{AccountId, ResourceId};
use marketbridge_proto::provisioning::v1 as pb;
use marketbridge_provisioning::ProvisioningServer;
use marketbridge_provisioning::entity::resource;
use marketbridge_provisioning::model::{ProvisioningJob, ResourceJob, ResourceStatus};
use marketbridge_storage::outbox::NewJob;
use marketbridge_storage::sea_orm::{ConnectionTrait, EntityTrait, IntoActiveModel};
use marketbridge_storage::testing::{
    CACHE_PATIENCE, TestBackend, TestDatabase, read_from_cache, run_on, spelled_otherwise,
    until_cache_serves, until_read,
};
use marketbridge_storage::{UnitOfWork, backend_test, changes};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

mod support;

/// A provisioning service on `url` with the default drivers.
async fn open(url: &str, cipher: &Cipher) -> ProvisioningServer {
    support::open(url, cipher, support::default_drivers()).await
}

/// Stores a pending resource of `account` with its provisioning job, as
/// `CreateResource` does for a product that takes time.
async fn insert_pending(
    server: &ProvisioningServer,
    cipher: &Cipher,
    account: &AccountId,
) -> ResourceId {
    let id = ResourceId::generate();
    let row = support::resource_row(&id, account, ResourceStatus::Pending, cipher);
    let domain = server.domain();
    let mut work = UnitOfWork::begin(domain.db(), domain.outbox())
        .await
        .unwrap();
    resource::Entity::insert(row.into_active_model())
        .exec_without_returning(&*work)
        .await
        .unwrap();
    let job = ProvisioningJob::Provision(ResourceJob::plain(&id));
    work.enqueue(NewJob::of(&job).unwrap()).await.unwrap();
    work.commit().await.unwrap();
    id
}

async fn get(
    server: &ProvisioningServer,
    id: &ResourceId,
    account: &str,
) -> marketbridge_core::Result<pb::Resource> {
    server
        .domain()
        .get_resource(pb::GetResourceRequest {
            resource_id: id.to_string(),
            account_id: account.to_owned(),
        })
        .await
}

/// Reads the resource until a read comes from the cache (see
/// [`read_from_cache`]) and returns what it read.
async fn read_cached(server: &ProvisioningServer, id: &ResourceId, account: &str) -> pb::Resource {
    read_from_cache(server.domain().resource_cache(), || async {
        get(server, id, account).await.unwrap()
    })
    .await
}

/// Reads through `server` until `check` accepts the answer.
async fn until_resource(
    server: &ProvisioningServer,
    id: &ResourceId,
    account: &str,
    what: &str,
    check: impl Fn(&pb::Resource) -> bool,
) {
    until_read(
        what,
        || async { get(server, id, account).await.unwrap() },
        check,
    )
    .await
}

/// A server whose cache serves: its change listener running (PostgreSQL)
/// until [`Listening::stop`]; statements are recorded.
async fn serving(url: &str) -> (ProvisioningServer, Cipher, Listening) {
    marketbridge_storage::testing::record_statements();
    let cipher = Cipher::from_base64_key(&Cipher::generate_base64_key()).unwrap();
    let server = open(url, &cipher).await;
    let stop = CancellationToken::new();
    let listener = server.spawn_change_listener(stop.clone());
    until_cache_serves(server.domain().resource_cache()).await;
    (server, cipher, Listening { stop, listener })
}

/// The change listener of [`serving`].
struct Listening {
    stop: CancellationToken,
    listener: Option<tokio::task::JoinHandle<()>>,
}

impl Listening {
    /// Stops the listener and waits for it.
    async fn stop(self) {
        self.stop.cancel();
        if let Some(listener) = self.listener {
            listener.await.unwrap();
        }
    }
}

backend_test!(
    every_change_is_visible_on_the_next_read,
    |database| async move {
        let (server, cipher, listening) = serving(database.url()).await;
        let account = AccountId::generate();
        let owner = account.as_str();
        let id = insert_pending(&server, &cipher, &account).await;

        let cached = read_cached(&server, &id, owner).await;
        assert_eq!(cached.name, "first");
        assert_eq!(cached.status, pb::ResourceStatus::Pending as i32);

        // A call's change.
        let updated = server
            .domain()
            .update_resource(pb::UpdateResourceRequest {
                resource_id: id.to_string(),
                account_id: owner.to_owned(),
                name: Some("renamed".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let read = get(&server, &id, owner).await.unwrap();
        assert_eq!(read.name, "renamed");
        assert_eq!(read, updated);

        // A job's change: the provisioning job makes it ready.
        assert_eq!(read_cached(&server, &id, owner).await.name, "renamed");
        let ran = server
            .domain()
            .outbox()
            .drain(server.job_handler().as_ref())
            .await
            .unwrap();
        assert!(ran >= 1);
        let read = get(&server, &id, owner).await.unwrap();
        assert_eq!(read.status, pb::ResourceStatus::Ready as i32);

        // A deletion.
        assert_eq!(
            read_cached(&server, &id, owner).await.status,
            pb::ResourceStatus::Ready as i32
        );
        let deleted = server
            .domain()
            .delete_resource(pb::DeleteResourceRequest {
                resource_id: id.to_string(),
                account_id: owner.to_owned(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_ne!(deleted.status, pb::ResourceStatus::Ready as i32);
        assert_eq!(get(&server, &id, owner).await.unwrap(), deleted);

        // The secrets read goes through the cache too, and sees rotations.
        let secrets = || async {
            server
                .domain()
                .resource_secrets(pb::GetResourceSecretsRequest {
                    resource_id: id.to_string(),
                })
                .await
                .unwrap()
                .secrets_version
        };
        let deadline = Instant::now() + CACHE_PATIENCE;
        loop {
            assert_eq!(secrets().await, 1);
            let hits = server.domain().resource_cache().hits();
            assert_eq!(secrets().await, 1);
            if server.domain().resource_cache().hits() == hits + 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the secrets were never read from the cache"
            );
        }

        listening.stop().await;
    }
);

backend_test!(
    a_cached_row_never_reaches_another_account,
    |database| async move {
        let (server, cipher, listening) = serving(database.url()).await;
        let account = AccountId::generate();
        let id = insert_pending(&server, &cipher, &account).await;
        let other = AccountId::generate();

        // Cold: what another account gets without a cached row.
        let cold = get(&server, &id, other.as_str()).await.unwrap_err();
        assert_eq!(cold.code(), ErrorCode::NotFound);
        let error = get(&server, &id, "not-an-account-id").await.unwrap_err();
        assert_eq!(error.code(), ErrorCode::NotFound);
        assert_eq!(error.message(), cold.message());
        // The row in the cache, then asked for by the other account (tried
        // again should a notification empty the cache in between).
        let cache = server.domain().resource_cache();
        let deadline = Instant::now() + CACHE_PATIENCE;
        loop {
            read_cached(&server, &id, account.as_str()).await;
            let hits = cache.hits();
            let error = get(&server, &id, other.as_str()).await.unwrap_err();
            assert_eq!(error.code(), ErrorCode::NotFound);
            assert_eq!(error.message(), cold.message());
            if cache.hits() == hits + 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the row was never in the cache when the other account asked"
            );
        }
        // No account filter (internal callers): the row.
        assert_eq!(get(&server, &id, "").await.unwrap().id, id.as_str());

        listening.stop().await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replicas_changes_reach_the_cache_on_postgres() {
    run_on(TestBackend::Postgres, |database: TestDatabase| async move {
        let cipher = Cipher::from_base64_key(&Cipher::generate_base64_key()).unwrap();
        let first = open(database.url(), &cipher).await;
        let second = open(&spelled_otherwise(database.url()), &cipher).await;
        assert_ne!(
            changes::identity(first.domain().db()),
            changes::identity(second.domain().db()),
            "the replicas must not share a generation, or this test proves nothing"
        );
        let account = AccountId::generate();
        let owner = account.as_str();
        let id = insert_pending(&second, &cipher, &account).await;

        // Not listening yet: no cache.
        let cache = first.domain().resource_cache();
        assert!(!cache.serving());
        get(&first, &id, owner).await.unwrap();
        get(&first, &id, owner).await.unwrap();
        assert_eq!(cache.hits(), 0, "no hit while the listener does not listen");

        let stop = CancellationToken::new();
        let listener = first
            .spawn_change_listener(stop.clone())
            .expect("a listener on PostgreSQL");
        until_cache_serves(first.domain().resource_cache()).await;
        read_cached(&first, &id, owner).await;

        // A change through the other replica's API.
        second
            .domain()
            .update_resource(pb::UpdateResourceRequest {
                resource_id: id.to_string(),
                account_id: owner.to_owned(),
                name: Some("from the other replica".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        until_resource(&first, &id, owner, "the other replica's update", |r| {
            r.name == "from the other replica"
        })
        .await;

        // A change by hand, outside any service.
        read_cached(&first, &id, owner).await;
        let admin = marketbridge_storage::sea_orm::Database::connect(database.url())
            .await
            .unwrap();
        admin
            .execute_unprepared(&format!(
                "UPDATE resources SET name = 'by hand' WHERE id = '{id}'"
            ))
            .await
            .unwrap();
        until_resource(&first, &id, owner, "the update by hand", |r| {
            r.name == "by hand"
        })
        .await;
        // A deletion of the row itself.
        read_cached(&first, &id, owner).await;
        admin
            .execute_unprepared(&format!("DELETE FROM resources WHERE id = '{id}'"))
            .await
            .unwrap();
        let deadline = Instant::now() + CACHE_PATIENCE;
        while get(&first, &id, owner).await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "the deletion never became visible"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = admin.close().await;

        // Stopped: the listener ends and the cache no longer serves.
        stop.cancel();
        listener.await.unwrap();
        assert!(!cache.serving());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_keeps_at_most_its_capacity_and_zero_turns_it_off() {
    // SQLite: no notification empties the cache behind the test's back.
    run_on(TestBackend::Sqlite, |database: TestDatabase| async move {
        let cipher = Cipher::from_base64_key(&Cipher::generate_base64_key()).unwrap();
        let server = open(database.url(), &cipher).await;
        let account = AccountId::generate();
        let owner = account.as_str();
        let first = insert_pending(&server, &cipher, &account).await;
        let second = insert_pending(&server, &cipher, &account).await;
        let cache = server.domain().resource_cache();
        cache.set_capacity(1);
        let hit = |id: ResourceId| {
            let server = &server;
            async move {
                let hits = cache.hits();
                get(server, &id, owner).await.unwrap();
                cache.hits() > hits
            }
        };
        assert!(!hit(first.clone()).await);
        assert!(hit(first.clone()).await);
        assert!(!hit(second.clone()).await, "kept in the place of the first");
        assert!(hit(second.clone()).await);
        assert!(!hit(first.clone()).await, "the first made room");

        cache.set_capacity(0);
        assert!(!cache.serving());
        let (hits, misses) = (cache.hits(), cache.misses());
        for _ in 0..3 {
            get(&server, &first, owner).await.unwrap();
        }
        assert_eq!(
            (cache.hits(), cache.misses()),
            (hits, misses),
            "off: not even looked at"
        );
    })
    .await;
}
