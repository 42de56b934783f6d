//! `usage_reports`: the reporting ledger. Every submission to a marketplace
//! (interim usage, an invoice, balances, a usage operation, a finalization)
//! is a row: the body sent, the marketplace's last answer, the status and the
//! attempts made.

use crate::lifecycle::report::ReportStatus;
use crate::submission::SubmissionKind;
use marketbridge_core::Result;
use marketbridge_core::ids::{AccountId, InvoiceId, ReportId, SubscriptionId};
use sea_orm::entity::prelude::*;

/// One submission to a marketplace.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "usage_reports")]
pub struct Model {
    /// `rpt_...`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Account it concerns.
    pub account_id: String,
    /// Subscription it concerns, or empty for account-wide submissions.
    pub subscription_id: String,
    /// Marketplace it goes to.
    pub marketplace: String,
    /// What it is (one of `crate::submission::kind`).
    pub kind: SubmissionKind,
    /// Start of the time it covers.
    pub window_start: Option<ChronoDateTimeUtc>,
    /// End of the time it covers.
    pub window_end: Option<ChronoDateTimeUtc>,
    /// Deterministic key (Google `operationId`, Vercel `externalId`); unique
    /// per marketplace and kind.
    pub idempotency_key: String,
    /// The body sent, exactly.
    pub request_json: String,
    /// The marketplace's last answer, or the last failure.
    pub response: String,
    pub status: ReportStatus,
    /// Delivery attempts made.
    pub attempts: i32,
    /// The outbox job delivering it.
    pub job_id: Option<String>,
    /// Our invoice, for invoice submissions.
    pub invoice_id: Option<String>,
    /// Created.
    pub created_at: ChronoDateTimeUtc,
    /// Last changed.
    pub updated_at: ChronoDateTimeUtc,
    /// When the marketplace last answered.
    pub sent_at: Option<ChronoDateTimeUtc>,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// The row's id.
    pub fn report(&self) -> Result<ReportId> {
        super::report_id(&self.id)
    }

    /// The account it is for.
    pub fn account(&self) -> Result<AccountId> {
        super::account_id(&self.account_id)
    }

    /// The subscription it is for; `None` for account-wide submissions.
    pub fn subscription(&self) -> Result<Option<SubscriptionId>> {
        if self.subscription_id.is_empty() {
            return Ok(None);
        }
        super::subscription_id(&self.subscription_id).map(Some)
    }

    /// The invoice it carries.
    pub fn invoice(&self) -> Result<Option<InvoiceId>> {
        self.invoice_id
            .as_deref()
            .map(super::invoice_id)
            .transpose()
    }
}
