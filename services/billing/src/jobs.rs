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
            other => Err(JobError::Permanent(format!("unknown job kind {other}"))),
        }
    }
}
