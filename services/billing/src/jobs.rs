//! Outbox jobs of the billing service: calls to the marketplaces.

use crate::domain::BillingDomain;
use async_trait::async_trait;
use marketbridge_core::money::Money;
use marketbridge_storage::outbox::{Job, JobError, JobHandler};
use serde::{Deserialize, Serialize};

/// Job kinds.
pub mod kind {
    /// Ask the marketplace to refund an invoice.
    pub const REFUND: &str = "billing.refund_invoice";
    /// Deliver a recorded submission (usage, interim billing, an invoice,
    /// balances, a finalization) to its marketplace.
    pub const DELIVER_REPORT: &str = "billing.deliver_report";
    /// Read an invoice's state from its marketplace.
    pub const REFRESH_INVOICE: &str = "billing.refresh_invoice";
    /// Suspend an account's resources: an invoice is overdue.
    pub const INVOICE_OVERDUE: &str = "billing.invoice_overdue";
    /// Resume what an overdue invoice suspended: it was paid or refunded.
    pub const INVOICE_SETTLED: &str = "billing.invoice_settled";
}

/// Payload of delivery jobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportJob {
    /// The ledger row to deliver.
    pub report_id: String,
}

/// Payload of invoice reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvoiceJob {
    /// Our invoice id.
    pub invoice_id: String,
}

/// Payload of refund jobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// Runs the billing service's jobs.
pub struct BillingJobs {
    domain: BillingDomain,
}

impl BillingJobs {
    /// Jobs over the domain.
    pub fn new(domain: BillingDomain) -> Self {
        Self { domain }
    }

    async fn refund(&self, job: &RefundJob) -> Result<(), JobError> {
        let Some(invoice) = self.domain.refund_sent(&job.invoice_id).await? else {
            return Ok(());
        };
        let (marketplace, account_external_id) =
            self.domain.account_identity(&invoice.account_id).await?;
        let adapter = self
            .domain
            .marketplaces()
            .adapter(marketplace)
            .ok_or_else(|| {
                JobError::Permanent(format!(
                    "refunds are not available on marketplace {marketplace}"
                ))
            })?;
        let amount = Money::new(job.amount_minor, job.currency.clone());
        adapter
            .refund_invoice(
                &account_external_id,
                &job.marketplace_invoice_id,
                &amount,
                &job.reason,
            )
            .await?;
        tracing::info!(invoice.id = %job.invoice_id, amount = %amount, "refund requested at the marketplace");
        Ok(())
    }
}

#[async_trait]
impl JobHandler for BillingJobs {
    async fn handle(&self, job: &Job) -> Result<(), JobError> {
        match job.kind.as_str() {
            kind::REFUND => self.refund(&job.payload()?).await,
            kind::DELIVER_REPORT => {
                let payload: ReportJob = job.payload()?;
                self.domain.deliver_report(&payload.report_id).await
            }
            kind::REFRESH_INVOICE => {
                let payload: InvoiceJob = job.payload()?;
                Ok(self.domain.refresh_invoice(&payload.invoice_id).await?)
            }
            kind::INVOICE_OVERDUE => {
                let payload: InvoiceJob = job.payload()?;
                Ok(self.domain.suspend_for_overdue(&payload.invoice_id).await?)
            }
            kind::INVOICE_SETTLED => {
                let payload: InvoiceJob = job.payload()?;
                Ok(self
                    .domain
                    .resume_after_settled(&payload.invoice_id)
                    .await?)
            }
            other => Err(JobError::Permanent(format!("unknown job kind {other}"))),
        }
    }
}
