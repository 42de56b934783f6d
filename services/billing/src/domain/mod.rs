//! The billing service's operations, independent of gRPC.

mod invoices;
mod plans;
mod subscriptions;
mod usage;

use crate::marketplace::Marketplaces;
use chrono::{DateTime, Utc};
use marketbridge_catalog::Catalog;
use marketbridge_core::time::SharedClock;
use marketbridge_rpc::AccountClient;
use marketbridge_storage::outbox::{Outbox, truncate_micros};
use sea_orm::DatabaseConnection;
use std::sync::Arc;

pub use invoices::{StoredItem, invoice_to_proto, state_name};
pub use usage::{MAX_BATCH, MAX_EVENT_AGE_DAYS, MAX_FUTURE_SKEW_MINUTES};

/// The billing service's state and operations.
#[derive(Clone)]
pub struct BillingDomain {
    db: DatabaseConnection,
    clock: SharedClock,
    outbox: Outbox,
    catalog: Arc<Catalog>,
    marketplaces: Marketplaces,
    accounts: AccountClient,
}

impl BillingDomain {
    /// The domain over an open, migrated database.
    pub fn new(
        db: DatabaseConnection,
        clock: SharedClock,
        outbox: Outbox,
        catalog: Arc<Catalog>,
        marketplaces: Marketplaces,
        accounts: AccountClient,
    ) -> Self {
        Self {
            db,
            clock,
            outbox,
            catalog,
            marketplaces,
            accounts,
        }
    }

    /// The marketplace adapters.
    pub fn marketplaces(&self) -> &Marketplaces {
        &self.marketplaces
    }

    /// The account service.
    pub fn accounts(&self) -> &AccountClient {
        &self.accounts
    }

    /// The database.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The outbox.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        truncate_micros(self.clock.now())
    }
}
