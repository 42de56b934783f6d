//! The seam where a marketplace plugs into billing: reading and refunding its
//! invoices, and (through the reporters) receiving usage, invoices and
//! balances.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use marketbridge_core::money::Money;
use marketbridge_core::{Marketplace, Result};
use std::collections::HashMap;
use std::sync::Arc;

/// Invoice states, as stored (Vercel's names).
pub mod invoice_state {
    pub const DRAFT: &str = "draft";
    pub const PENDING: &str = "pending";
    pub const SCHEDULED: &str = "scheduled";
    pub const INVOICED: &str = "invoiced";
    pub const PAID: &str = "paid";
    pub const NOTPAID: &str = "notpaid";
    pub const OVERDUE: &str = "overdue";
    pub const REFUND_REQUESTED: &str = "refund_requested";
    pub const REFUNDED: &str = "refunded";

    /// Every state, in lifecycle order.
    pub const ALL: [&str; 9] = [
        DRAFT,
        PENDING,
        SCHEDULED,
        INVOICED,
        PAID,
        NOTPAID,
        OVERDUE,
        REFUND_REQUESTED,
        REFUNDED,
    ];
}

/// An invoice as the marketplace describes it now.
#[derive(Debug, Clone, PartialEq)]
pub struct InvoiceSnapshot {
    /// The marketplace's invoice id.
    pub marketplace_invoice_id: String,
    /// Our external id, when the invoice was ours.
    pub external_id: Option<String>,
    /// State (one of [`invoice_state`]).
    pub state: String,
    /// Total.
    pub total: Money,
    /// Billing period.
    pub period: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// When it was paid.
    pub paid_at: Option<DateTime<Utc>>,
    /// True for a test invoice.
    pub test: bool,
}

/// Calls billing makes to a marketplace about invoices.
#[async_trait]
pub trait BillingMarketplace: Send + Sync + 'static {
    /// Reads an invoice of an account (`account_external_id` is the
    /// marketplace's account id); `None` when the marketplace does not know it.
    async fn fetch_invoice(
        &self,
        account_external_id: &str,
        marketplace_invoice_id: &str,
    ) -> Result<Option<InvoiceSnapshot>>;
    /// Refunds (part of) an invoice.
    async fn refund_invoice(
        &self,
        account_external_id: &str,
        marketplace_invoice_id: &str,
        amount: &Money,
        reason: &str,
    ) -> Result<()>;
}

/// Adapters per marketplace.
#[derive(Clone, Default)]
pub struct Marketplaces {
    adapters: HashMap<Marketplace, Arc<dyn BillingMarketplace>>,
}

impl Marketplaces {
    /// Registers the adapter of a marketplace.
    pub fn with_adapter(
        mut self,
        marketplace: Marketplace,
        adapter: Arc<dyn BillingMarketplace>,
    ) -> Self {
        self.adapters.insert(marketplace, adapter);
        self
    }

    /// The adapter of a marketplace, if registered.
    pub fn adapter(&self, marketplace: Marketplace) -> Option<&Arc<dyn BillingMarketplace>> {
        self.adapters.get(&marketplace)
    }
}
