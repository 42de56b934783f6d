//! What the account service's tests share: a service on a test database,
//! its clock stopped, with no marketplace adapter and no other service.

use chrono::{TimeZone, Utc};
use marketbridge_account::marketplace::Marketplaces;
use marketbridge_account::{AccountDeps, AccountServer};
use marketbridge_config::OutboxOptions;
use marketbridge_core::crypto::Cipher;
use marketbridge_core::time::ManualClock;
use std::sync::Arc;

/// An account service on `url`.
pub async fn open(url: &str) -> AccountServer {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap());
    AccountServer::open(
        url,
        &OutboxOptions::default(),
        AccountDeps {
            clock: Arc::new(clock),
            cipher: Cipher::from_base64_key(&Cipher::generate_base64_key()).unwrap(),
            marketplaces: Marketplaces::default(),
            provisioning: None,
            billing: None,
        },
    )
    .await
    .unwrap()
}
