//! The read cache of resource rows, for the single-resource reads on hot
//! paths (`GetResource`, the console, a resource's secrets): a
//! [`RowCache`] keyed by resource id, kept right across replicas on
//! PostgreSQL by the trigger on `resources` (migration
//! `m0005_000001_resources_change_notifications`) and its listener (`spawn_change_listener`).
//! The invariants are [`marketbridge_storage::row_cache`]'s.

use crate::entity::resource;
use marketbridge_storage::row_cache::RowCache;
use marketbridge_storage::sea_orm::DatabaseConnection;

/// The channel the `resources` trigger notifies on PostgreSQL.
pub const CHANNEL: &str = "marketbridge_provisioning_resources";

/// Rows kept unless configured otherwise (`provisioning.resource_cache_entries`).
pub const DEFAULT_ENTRIES: usize = 10_000;

/// The read cache of resource rows, by id.
pub type ResourceCache = RowCache<resource::Model>;

/// A resource cache of `entries` rows (0: off) of `db`'s `resources`.
pub fn new(db: &DatabaseConnection, entries: usize) -> ResourceCache {
    RowCache::new(db, "resource", entries)
}
