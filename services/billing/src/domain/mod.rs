//! The billing service's operations, independent of gRPC.

mod closing;
mod interim_billing;
mod invoices;
mod invoicing;
mod overdue;
mod plans;
mod prepaid;
mod pricing;
mod reports;
mod subscriptions;
mod usage;
mod usage_operations;
mod usage_sums;

use crate::marketplace::Marketplaces;
use chrono::{DateTime, Utc};
use marketbridge_catalog::Catalog;
use marketbridge_config::BillingOptions;
use marketbridge_core::time::SharedClock;
use marketbridge_rpc::{AccountApi, ProvisioningApi};
use marketbridge_storage::outbox::{Outbox, truncate_micros};
use sea_orm::DatabaseConnection;
use std::sync::Arc;

pub use invoices::{StoredItem, invoice_to_proto, state_from_proto, stored_items};
pub use invoicing::{MINIMUM_INVOICE_MINOR, invoice_external_id};
pub use reports::report_to_proto;
pub use usage::{MAX_BATCH, MAX_EVENT_AGE_DAYS};
pub use usage_operations::{MAX_WINDOWS_PER_RUN, operation_id};

/// The billing service's state and operations.
#[derive(Clone)]
pub struct BillingDomain {
    db: DatabaseConnection,
    clock: SharedClock,
    outbox: Outbox,
    catalog: Arc<Catalog>,
    served_plans: Arc<marketbridge_catalog::ServedPlans>,
    marketplaces: Marketplaces,
    peers: Peers,
    options: BillingOptions,
    first_versions: Arc<subscriptions::FirstVersions>,
}

/// The services billing calls.
#[derive(Clone)]
pub struct Peers {
    /// Account identities and marketplace credentials.
    pub accounts: Arc<dyn AccountApi>,
    /// The subscriptions provisioning holds.
    pub provisioning: Arc<dyn ProvisioningApi>,
}

impl BillingDomain {
    /// The domain over an open, migrated database.
    pub fn new(
        db: DatabaseConnection,
        clock: SharedClock,
        outbox: Outbox,
        catalog: Arc<Catalog>,
        marketplaces: Marketplaces,
        peers: Peers,
        options: BillingOptions,
    ) -> Self {
        Self {
            first_versions: Arc::new(subscriptions::FirstVersions::new(db.clone())),
            db,
            clock,
            outbox,
            served_plans: Arc::new(marketbridge_catalog::ServedPlans::of(&catalog)),
            catalog,
            marketplaces,
            peers,
            options,
        }
    }

    /// The billing settings (schedules, settle delay, test invoices).
    pub fn options(&self) -> &BillingOptions {
        &self.options
    }

    /// The marketplace adapters.
    pub fn marketplaces(&self) -> &Marketplaces {
        &self.marketplaces
    }

    /// The account service.
    pub fn accounts(&self) -> &dyn AccountApi {
        self.peers.accounts.as_ref()
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

    /// How far ahead of our clock a usage event's time may be
    /// (`billing.usage_future_skew_seconds`, at most a day).
    pub(crate) fn future_skew(&self) -> chrono::Duration {
        const DAY: u64 = 86_400;
        chrono::Duration::seconds(self.options.usage_future_skew_seconds.min(DAY) as i64)
    }
}
