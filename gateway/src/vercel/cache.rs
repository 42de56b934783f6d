//! What the Vercel adapter remembers of the account service between calls,
//! so a partner read does not ask for the installation's account every time.
//!
//! - **Accounts by installation**, for reads only, for at most
//!   [`ACCOUNT_TTL`]. A change the gateway makes itself (install, update,
//!   uninstall) forgets the installation at once, and a lookup that started
//!   before a change is never stored after it. A change made elsewhere (by
//!   another gateway replica, an operator, a webhook processed in the
//!   background) is seen within the TTL: a read may describe an
//!   installation as it was up to that long ago, which is what a client
//!   racing the change would see anyway. Nothing here decides who may call:
//!   the token is verified and matched to the installation on every call;
//!   changes always read the account fresh.
//! - **Marketplace identities by account id** (`acc_…` → the installation
//!   id), which never change for an account, so they are kept until the
//!   bound pushes them out.
//!
//! Both maps are bounded ([`CAPACITY`]): when full, expired entries go
//! first, then arbitrary ones.

use marketbridge_core::time::SharedClock;
use marketbridge_proto::account::v1 as account_pb;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// How long an installation's account is trusted without asking again.
pub const ACCOUNT_TTL: chrono::Duration = chrono::Duration::seconds(2);

/// Most entries each map holds.
pub const CAPACITY: usize = 10_000;

struct Entry {
    account: account_pb::Account,
    expires: chrono::DateTime<chrono::Utc>,
}

/// Accounts by installation id, and account ids' marketplace identities.
pub struct AccountCache {
    clock: SharedClock,
    capacity: usize,
    by_installation: Mutex<HashMap<String, Entry>>,
    identities: Mutex<HashMap<String, String>>,
    /// Bumped by every forget, so a lookup that began before one does not
    /// store what it read.
    generation: AtomicU64,
}

impl std::fmt::Debug for AccountCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountCache")
            .field("capacity", &self.capacity)
            .field("accounts", &self.len())
            .finish_non_exhaustive()
    }
}

/// Where a lookup began, for [`AccountCache::store`].
#[derive(Debug, Clone, Copy)]
pub struct Lookup(u64);

impl AccountCache {
    /// An empty cache on `clock`, holding at most `capacity` entries per map.
    pub fn new(clock: SharedClock, capacity: usize) -> Self {
        Self {
            clock,
            capacity: capacity.max(1),
            by_installation: Mutex::new(HashMap::new()),
            identities: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    /// The installation's account, when it was read less than the TTL ago.
    pub fn account(&self, installation_id: &str) -> Option<account_pb::Account> {
        let now = self.clock.now();
        let entries = lock(&self.by_installation);
        entries
            .get(installation_id)
            .filter(|entry| entry.expires > now)
            .map(|entry| entry.account.clone())
    }

    /// Marks the start of a lookup of the account service.
    pub fn begin(&self) -> Lookup {
        Lookup(self.generation.load(Ordering::Acquire))
    }

    /// Remembers `account` of `installation_id`, read by the lookup `began`,
    /// unless something was forgotten since it began.
    pub fn store(&self, began: Lookup, installation_id: &str, account: &account_pb::Account) {
        self.remember_identity(account);
        let mut entries = lock(&self.by_installation);
        // Checked under the lock, so a forget either happened before (and is
        // seen here) or happens after (and removes this entry).
        if self.generation.load(Ordering::Acquire) != began.0 {
            return;
        }
        let now = self.clock.now();
        if entries.len() >= self.capacity && !entries.contains_key(installation_id) {
            entries.retain(|_, entry| entry.expires > now);
            if entries.len() >= self.capacity
                && let Some(key) = entries.keys().next().cloned()
            {
                entries.remove(&key);
            }
        }
        entries.insert(
            installation_id.to_owned(),
            Entry {
                account: account.clone(),
                expires: now + ACCOUNT_TTL,
            },
        );
    }

    /// Forgets the installation's account (the gateway changed it).
    pub fn forget(&self, installation_id: &str) {
        let mut entries = lock(&self.by_installation);
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.remove(installation_id);
    }

    /// The marketplace's id of account `account_id`, when known.
    pub fn identity(&self, account_id: &str) -> Option<String> {
        lock(&self.identities).get(account_id).cloned()
    }

    /// Remembers the marketplace identity of `account`.
    pub fn remember_identity(&self, account: &account_pb::Account) {
        let Some(reference) = &account.marketplace_ref else {
            return;
        };
        let mut identities = lock(&self.identities);
        if identities.len() >= self.capacity
            && !identities.contains_key(&account.id)
            && let Some(key) = identities.keys().next().cloned()
        {
            identities.remove(&key);
        }
        identities.insert(account.id.clone(), reference.external_id.clone());
    }

    /// How many accounts are held (expired ones included until pushed out).
    pub fn len(&self) -> usize {
        lock(&self.by_installation).len()
    }

    /// Whether no account is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many identities are held.
    pub fn identities_len(&self) -> usize {
        lock(&self.identities).len()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use marketbridge_core::time::ManualClock;
    use marketbridge_proto::common::v1::{Marketplace, MarketplaceRef};
    use std::sync::Arc;

    fn account(id: &str, installation: &str) -> account_pb::Account {
        account_pb::Account {
            id: id.to_owned(),
            marketplace_ref: Some(MarketplaceRef::new(Marketplace::Vercel, installation)),
            ..Default::default()
        }
    }

    fn cache(capacity: usize) -> (AccountCache, ManualClock) {
        let clock = ManualClock::new(chrono::Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap());
        (AccountCache::new(Arc::new(clock.clone()), capacity), clock)
    }

    #[test]
    fn an_account_is_served_until_its_ttl_runs_out() {
        let (cache, clock) = cache(10);
        let lookup = cache.begin();
        cache.store(lookup, "icfg_1", &account("acc_1", "icfg_1"));
        assert_eq!(cache.account("icfg_1").map(|a| a.id), Some("acc_1".into()));
        clock.advance(ACCOUNT_TTL - chrono::Duration::milliseconds(1));
        assert!(cache.account("icfg_1").is_some());
        clock.advance(chrono::Duration::milliseconds(1));
        assert!(cache.account("icfg_1").is_none(), "expired at its TTL");
        assert_eq!(cache.identity("acc_1").as_deref(), Some("icfg_1"));
    }

    #[test]
    fn a_forget_removes_the_account_and_stops_older_lookups_storing() {
        let (cache, _clock) = cache(10);
        cache.store(cache.begin(), "icfg_1", &account("acc_1", "icfg_1"));
        let before = cache.begin();
        cache.forget("icfg_1");
        assert!(cache.account("icfg_1").is_none());
        cache.store(before, "icfg_1", &account("acc_1", "icfg_1"));
        assert!(
            cache.account("icfg_1").is_none(),
            "a lookup begun before the change does not store its stale answer"
        );
        cache.store(cache.begin(), "icfg_1", &account("acc_1", "icfg_1"));
        assert!(cache.account("icfg_1").is_some());
    }

    #[test]
    fn the_cache_never_holds_more_than_its_capacity() {
        let (cache, clock) = cache(3);
        for n in 0..10 {
            let installation = format!("icfg_{n}");
            cache.store(
                cache.begin(),
                &installation,
                &account(&format!("acc_{n}"), &installation),
            );
            assert!(cache.len() <= 3, "{} accounts held", cache.len());
            assert!(cache.identities_len() <= 3);
        }
        assert!(cache.account("icfg_9").is_some(), "the newest is held");
        // Expired entries are the first to go.
        clock.advance(ACCOUNT_TTL);
        cache.store(cache.begin(), "icfg_new", &account("acc_new", "icfg_new"));
        assert_eq!(cache.len(), 1);
    }
}
