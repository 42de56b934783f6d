//! The read cache of accounts, for `GetAccount`: the gateway asks it for an
//! installation's account on every change a marketplace makes, and the
//! provisioning service for the account behind each call. A
//! [`RowCache`] of the answer (`pb::Account`), kept under our id and under
//! the marketplace's, made right across replicas on PostgreSQL by the
//! trigger on `accounts` (migration `m0003_000001_accounts_change_notifications`)
//! and its listener (`spawn_change_listener`). The invariants are
//! [`marketbridge_storage::row_cache`]'s: every write of the account service
//! to `accounts` is a write transaction ([`marketbridge_storage::begin_write`]),
//! whose commit empties the cache.

use crate::convert::marketplace_of;
use crate::entity::account;
use crate::model::{AccountKey, ExternalId};
use marketbridge_core::Result;
use marketbridge_proto::account::v1 as pb;
use marketbridge_storage::row_cache::RowCache;
use sea_orm::DatabaseConnection;

/// The channel the `accounts` trigger notifies on PostgreSQL.
pub const CHANNEL: &str = "marketbridge_account_accounts";

/// Lookups kept unless configured otherwise (`account.account_cache_entries`).
pub const DEFAULT_ENTRIES: usize = 10_000;

/// The read cache of accounts, by [`key`].
pub type AccountCache = RowCache<pb::Account>;

/// An account cache of `entries` lookups (0: off) of `db`'s `accounts`.
pub fn new(db: &DatabaseConnection, entries: usize) -> AccountCache {
    RowCache::new(db, "account", entries)
}

/// The cache's key of a lookup.
pub(crate) fn key(account: &AccountKey) -> String {
    match account {
        AccountKey::Id(id) => format!("id:{id}"),
        AccountKey::Ref(marketplace, external_id) => {
            format!("ref:{}:{external_id}", marketplace.as_str())
        }
    }
}

/// The keys an account's answer is kept under: our id and the
/// marketplace's.
pub(crate) fn keys_of(row: &account::Model) -> Result<[String; 2]> {
    let marketplace = marketplace_of(&row.marketplace)?;
    Ok([
        key(&AccountKey::Id(row.account_id()?)),
        key(&AccountKey::Ref(
            marketplace,
            ExternalId::new(row.external_id.clone()),
        )),
    ])
}
