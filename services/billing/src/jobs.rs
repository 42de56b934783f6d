//! Runs the billing service's outbox jobs ([`BillingJob`]): calls to the
//! marketplaces and to provisioning, each after the transaction that
//! enqueued it committed.

use crate::domain::BillingDomain;
use crate::model::ids::MarketplaceInvoiceId;
use crate::model::job::{BillingJob, RefundJob};
use async_trait::async_trait;
use marketbridge_core::money::Money;
use marketbridge_storage::outbox::{Job, JobError, JobHandler};

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
        let Some(invoice) = self.domain.refund_sent(&job.invoice()?).await? else {
            return Ok(());
        };
        let (marketplace, account_external_id) =
            self.domain.account_identity(&invoice.account()?).await?;
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
                &MarketplaceInvoiceId::new(job.marketplace_invoice_id.clone()),
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
        match job.decode::<BillingJob>()? {
            BillingJob::Refund(refund) => self.refund(&refund).await,
            BillingJob::DeliverReport(report) => {
                self.domain.deliver_report(&report.report()?).await
            }
            BillingJob::RefreshInvoice(invoice) => {
                Ok(self.domain.refresh_invoice(&invoice.invoice()?).await?)
            }
            BillingJob::InvoiceOverdue(invoice) => {
                Ok(self.domain.suspend_for_overdue(&invoice.invoice()?).await?)
            }
            BillingJob::InvoiceSettled(invoice) => Ok(self
                .domain
                .resume_after_settled(&invoice.invoice()?)
                .await?),
        }
    }
}
