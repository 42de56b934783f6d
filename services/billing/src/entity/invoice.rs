//! `invoices`: every invoice of a customer at its marketplace, ours or the
//! marketplace's own (prepayment purchases).

use crate::lifecycle::invoice::InvoiceState;
use marketbridge_core::Result;
use marketbridge_core::ids::{AccountId, InvoiceId};
use sea_orm::entity::prelude::*;

/// An invoice.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "invoices")]
pub struct Model {
    /// `inv_...`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Account billed.
    pub account_id: String,
    /// Subscription billed, or empty.
    pub subscription_id: String,
    /// Marketplace it lives at.
    pub marketplace: String,
    /// The marketplace's invoice id, once known; unique per marketplace.
    pub marketplace_invoice_id: Option<String>,
    /// Our external id (unique per account), for invoices we submitted.
    pub external_id: Option<String>,
    /// State (Vercel's names).
    pub state: InvoiceState,
    /// When the state we hold was reported.
    pub state_at: ChronoDateTimeUtc,
    /// Period start.
    pub period_start: Option<ChronoDateTimeUtc>,
    /// Period end.
    pub period_end: Option<ChronoDateTimeUtc>,
    /// Invoice date.
    pub invoice_date: Option<ChronoDateTimeUtc>,
    /// Lines, JSON.
    pub items: String,
    /// Total in minor units.
    pub total_minor: i64,
    /// Currency.
    pub currency: String,
    /// A test invoice.
    pub test: bool,
    /// The final invoice of an uninstalled account.
    pub is_final: bool,
    /// Refunded so far, minor units.
    pub refund_total_minor: i64,
    /// Reason of the last refund.
    pub refund_reason: String,
    /// When it was paid.
    pub paid_at: Option<ChronoDateTimeUtc>,
    /// Created.
    pub created_at: ChronoDateTimeUtc,
    /// Last changed.
    pub updated_at: ChronoDateTimeUtc,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// The invoice's id.
    pub fn invoice(&self) -> Result<InvoiceId> {
        super::invoice_id(&self.id)
    }

    /// The account billed.
    pub fn account(&self) -> Result<AccountId> {
        super::account_id(&self.account_id)
    }
}
