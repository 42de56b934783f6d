//! `usage_reports`: the reporting ledger. Every submission to a marketplace
//! (interim usage, an invoice, balances, a usage operation, a finalization)
//! is a row: the body sent, the marketplace's last answer, the status and the
//! attempts made.

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
    pub kind: String,
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
    /// One of `crate::domain::report_status`.
    pub status: String,
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
