//! The billing service's outbox jobs: one serde-tagged enum, each variant
//! stored under its kind (`billing.deliver_report`) with its payload as
//! before, so rows written earlier still read back. The domain enqueues
//! them ([`marketbridge_storage::outbox::NewJob::of`]); [`crate::jobs`]
//! runs them.

use marketbridge_core::Result;
use marketbridge_core::ids::{InvoiceId, ReportId};
use serde::{Deserialize, Serialize};

/// Every job of the billing service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "payload")]
pub enum BillingJob {
    /// Ask the marketplace to refund an invoice.
    #[serde(rename = "billing.refund_invoice")]
    Refund(RefundJob),
    /// Deliver a recorded submission (usage, interim billing, an invoice,
    /// balances, a finalization) to its marketplace.
    #[serde(rename = "billing.deliver_report")]
    DeliverReport(ReportJob),
    /// Read an invoice's state from its marketplace.
    #[serde(rename = "billing.refresh_invoice")]
    RefreshInvoice(InvoiceJob),
    /// Suspend an account's resources: an invoice is overdue.
    #[serde(rename = "billing.invoice_overdue")]
    InvoiceOverdue(InvoiceJob),
    /// Resume what an overdue invoice suspended: it was paid or refunded.
    #[serde(rename = "billing.invoice_settled")]
    InvoiceSettled(InvoiceJob),
}

/// Payload of delivery jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportJob {
    /// The ledger row to deliver.
    report_id: String,
}

impl ReportJob {
    /// The delivery of `report`.
    pub fn of(report: &ReportId) -> Self {
        Self {
            report_id: report.as_str().to_owned(),
        }
    }

    /// The ledger row; an unreadable id is an error.
    pub fn report(&self) -> Result<ReportId> {
        ReportId::parse("report_id", &self.report_id)
    }
}

/// Payload of invoice jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceJob {
    /// Our invoice id.
    invoice_id: String,
}

impl InvoiceJob {
    /// A job about `invoice`.
    pub fn of(invoice: &InvoiceId) -> Self {
        Self {
            invoice_id: invoice.as_str().to_owned(),
        }
    }

    /// Our invoice; an unreadable id is an error.
    pub fn invoice(&self) -> Result<InvoiceId> {
        InvoiceId::parse("invoice_id", &self.invoice_id)
    }
}

/// Payload of refund jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundJob {
    /// Our invoice id.
    pub invoice_id: String,
    /// The marketplace's invoice id.
    pub marketplace_invoice_id: String,
    /// Amount to refund, minor units.
    pub amount_minor: i64,
    /// Currency.
    pub currency: String,
    /// Why.
    pub reason: String,
}

impl RefundJob {
    /// Our invoice; an unreadable id is an error.
    pub fn invoice(&self) -> Result<InvoiceId> {
        InvoiceId::parse("invoice_id", &self.invoice_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marketbridge_storage::outbox::NewJob;

    #[test]
    fn jobs_keep_their_stored_kinds_and_payloads() {
        let invoice = InvoiceId::generate();
        let report = ReportId::generate();
        let table = [
            (
                BillingJob::DeliverReport(ReportJob::of(&report)),
                "billing.deliver_report",
                format!(r#"{{"report_id":"{report}"}}"#),
            ),
            (
                BillingJob::RefreshInvoice(InvoiceJob::of(&invoice)),
                "billing.refresh_invoice",
                format!(r#"{{"invoice_id":"{invoice}"}}"#),
            ),
            (
                BillingJob::InvoiceOverdue(InvoiceJob::of(&invoice)),
                "billing.invoice_overdue",
                format!(r#"{{"invoice_id":"{invoice}"}}"#),
            ),
            (
                BillingJob::InvoiceSettled(InvoiceJob::of(&invoice)),
                "billing.invoice_settled",
                format!(r#"{{"invoice_id":"{invoice}"}}"#),
            ),
            (
                BillingJob::Refund(RefundJob {
                    invoice_id: invoice.to_string(),
                    marketplace_invoice_id: "in_1".into(),
                    amount_minor: 125,
                    currency: "USD".into(),
                    reason: "why".into(),
                }),
                "billing.refund_invoice",
                format!(
                    r#"{{"invoice_id":"{invoice}","marketplace_invoice_id":"in_1","amount_minor":125,"currency":"USD","reason":"why"}}"#
                ),
            ),
        ];
        for (job, kind, payload) in table {
            let new = NewJob::of(&job).unwrap();
            assert_eq!(new.kind(), kind);
            let old = NewJob::new(
                kind,
                &serde_json::from_str::<serde_json::Value>(&payload).unwrap(),
            )
            .unwrap();
            assert_eq!(format!("{new:?}"), format!("{old:?}"), "{kind}");
        }
    }
}
