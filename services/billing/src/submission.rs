//! What billing sends to a marketplace, in marketplace-neutral terms. The
//! domain builds these from the usage ledger and the catalog; a marketplace's
//! reporter renders them as its wire body, which the reporting ledger stores
//! and the outbox delivers unchanged on every attempt.

use chrono::{DateTime, Utc};
use marketbridge_catalog::MetricKind;
use marketbridge_core::money::Money;
use std::collections::BTreeMap;

crate::lifecycle::text_enum!(
    /// Kinds of submission, as stored in the reporting ledger.
    SubmissionKind, "submission kind" {
        /// Usage of one window of one subscription (Google Service Control).
        Usage => "usage",
        /// Interim billing and usage of an account (Vercel `POST .../billing`).
        BillingData => "billing_data",
        /// An invoice (Vercel `POST .../billing/invoices`).
        Invoice => "invoice",
        /// Prepaid balances (Vercel `POST .../billing/balance`).
        Balances => "balances",
        /// The end of an uninstalled account's billing (Vercel
        /// `POST .../billing/finalize`).
        Finalize => "finalize",
    }
);

/// A line that charges money (a plan's base price, usage beyond what the
/// plan includes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeLine {
    /// Our plan id.
    pub plan_id: String,
    /// The marketplace's id of the plan.
    pub marketplace_plan_id: String,
    /// The resource charged; `None` for account-level lines.
    pub resource_id: Option<String>,
    /// Start of the time charged.
    pub start: DateTime<Utc>,
    /// End of the time charged.
    pub end: DateTime<Utc>,
    /// What is charged.
    pub name: String,
    /// More about it.
    pub details: String,
    /// Price of one unit, in micro-units.
    pub unit_price_micros: i64,
    /// Units charged.
    pub quantity: i64,
    /// Unit name.
    pub units: String,
    /// Line total, rounded to the currency's minor unit.
    pub total: Money,
}

/// Usage of one metric, as running totals of a billing period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageLine {
    /// The resource; `None` for the account-wide sum.
    pub resource_id: Option<String>,
    /// Our metric id.
    pub metric_id: String,
    /// Display name.
    pub name: String,
    /// How it adds up.
    pub kind: MetricKind,
    /// Unit name.
    pub units: String,
    /// Used during the day the submission is for.
    pub day_value: i64,
    /// Used since the start of the billing period.
    pub period_value: i64,
    /// Included in the plan per period, when the plan includes some.
    pub plan_value: Option<i64>,
}

/// Interim billing and usage of an account: display only, the latest
/// submission of a period wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterimBilling {
    /// When it was computed.
    pub timestamp: DateTime<Utc>,
    /// End of the (UTC) day the day values are for.
    pub day_end: DateTime<Utc>,
    /// Billing period start.
    pub period_start: DateTime<Utc>,
    /// Billing period end.
    pub period_end: DateTime<Utc>,
    /// Charges so far in the period.
    pub items: Vec<ChargeLine>,
    /// Usage so far in the period, per resource and account-wide.
    pub usage: Vec<UsageLine>,
}

/// How a test invoice should behave at the marketplace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TestInvoice {
    /// The outcome the marketplace should simulate (`paid`, `notpaid`,
    /// `overdue`); `None` for its default.
    pub result: Option<String>,
}

/// An invoice: one per resource (or account-level subscription), billing
/// period and plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceDraft {
    /// Our id of it, unique per account; a resubmission is recognised by it.
    pub external_id: String,
    /// Invoice date (within the period).
    pub invoice_date: DateTime<Utc>,
    /// A note shown with it.
    pub memo: Option<String>,
    /// Period start.
    pub period_start: DateTime<Utc>,
    /// Period end.
    pub period_end: DateTime<Utc>,
    /// The lines.
    pub items: Vec<ChargeLine>,
    /// The last invoice of an uninstalled account.
    pub is_final: bool,
    /// Test mode, when configured.
    pub test: Option<TestInvoice>,
}

/// One prepaid balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceLine {
    /// The resource; `None` for the account's balance.
    pub resource_id: Option<String>,
    /// Display text of the credit left.
    pub credit: String,
    /// Label of the credit.
    pub name_label: String,
    /// Value left (negative when usage overdrew it).
    pub value: Money,
}

/// Prepaid balances of an account at a moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancesDraft {
    /// When they were computed.
    pub timestamp: DateTime<Utc>,
    /// The balances.
    pub balances: Vec<BalanceLine>,
}

/// One metric's usage in a usage operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricValue {
    /// The marketplace's metric name.
    pub metric_name: String,
    /// Quantity in the window.
    pub value: i64,
}

/// Usage of one subscription in one window, as a metering operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageOperation {
    /// Derived from the ledger key, so every retry carries the same id.
    pub operation_id: String,
    /// A name for the kind of operation.
    pub operation_name: String,
    /// The marketplace's consumer (Google `usageReportingId`).
    pub consumer_id: String,
    /// Window start (the previous window's end).
    pub start: DateTime<Utc>,
    /// Window end.
    pub end: DateTime<Utc>,
    /// One value per metric the plan in force meters.
    pub values: Vec<MetricValue>,
    /// Labels for the customer's cost attribution.
    pub labels: BTreeMap<String, String>,
}

/// Anything billing sends to a marketplace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submission {
    /// Usage of one window of one subscription.
    Usage(UsageOperation),
    /// Interim billing and usage of an account.
    BillingData(InterimBilling),
    /// An invoice.
    Invoice(InvoiceDraft),
    /// Prepaid balances.
    Balances(BalancesDraft),
    /// The end of an uninstalled account's billing.
    Finalize,
}

impl Submission {
    /// The kind stored in the reporting ledger.
    pub fn kind(&self) -> SubmissionKind {
        match self {
            Submission::Usage(_) => SubmissionKind::Usage,
            Submission::BillingData(_) => SubmissionKind::BillingData,
            Submission::Invoice(_) => SubmissionKind::Invoice,
            Submission::Balances(_) => SubmissionKind::Balances,
            Submission::Finalize => SubmissionKind::Finalize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_keep_their_stored_names() {
        let names: Vec<_> = SubmissionKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            ["usage", "billing_data", "invoice", "balances", "finalize"]
        );
        for kind in SubmissionKind::ALL {
            assert_eq!(kind.as_str().parse::<SubmissionKind>(), Ok(*kind));
        }
        assert!("Usage".parse::<SubmissionKind>().is_err());
    }
}
