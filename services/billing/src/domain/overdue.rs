//! Following unpaid invoices (§6 of the Vercel contract): once an invoice
//! is `overdue` (15 days after the first failed payment, automatic retries
//! over) the account's resources are suspended, their data kept; when it is
//! paid, or refunded (a refund on a `notpaid` or `overdue` invoice cancels
//! it), the resources this invoice suspended are resumed. Nothing is deleted
//! for non-payment. Linked (imported) resources are not billed through the
//! marketplace and are left alone.

use super::BillingDomain;
use crate::entity::invoice;
use crate::jobs::{InvoiceJob, kind};
use crate::marketplace::invoice_state;
use marketbridge_core::{Error, Result};
use marketbridge_proto::common::v1::{PageRequest, RequestContext};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_storage::db_error;
use marketbridge_storage::outbox::NewJob;
use sea_orm::{ConnectionTrait, EntityTrait};

/// The status message a resource suspended for `invoice` carries.
fn reason(invoice: &invoice::Model) -> String {
    format!(
        "Invoice {} is overdue",
        invoice
            .marketplace_invoice_id
            .as_deref()
            .unwrap_or(invoice.id.as_str())
    )
}

impl BillingDomain {
    /// Schedules what an invoice's move from `previous` to its state calls
    /// for, in `conn`.
    pub(crate) async fn follow_invoice_state(
        &self,
        conn: &impl ConnectionTrait,
        row: &invoice::Model,
        previous: &str,
    ) -> Result<()> {
        let job = match (previous, row.state.as_str()) {
            (previous, invoice_state::OVERDUE) if previous != invoice_state::OVERDUE => {
                kind::INVOICE_OVERDUE
            }
            (
                invoice_state::OVERDUE,
                invoice_state::PAID | invoice_state::REFUND_REQUESTED | invoice_state::REFUNDED,
            ) => kind::INVOICE_SETTLED,
            _ => return Ok(()),
        };
        self.outbox
            .enqueue(
                conn,
                NewJob::new(
                    job,
                    &InvoiceJob {
                        invoice_id: row.id.clone(),
                    },
                )?
                .dedupe_key(format!("{job}:{}", row.id)),
            )
            .await?;
        tracing::info!(invoice.id = %row.id, from = %previous, to = %row.state, "invoice state followed");
        Ok(())
    }

    async fn account_resources(&self, account_id: &str) -> Result<Vec<provisioning_pb::Resource>> {
        let mut provisioning = self.peers.provisioning.clone();
        let mut resources = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = provisioning
                .list_resources(provisioning_pb::ListResourcesRequest {
                    account_id: account_id.to_owned(),
                    resource_ids: Vec::new(),
                    include_deleted: false,
                    page: Some(PageRequest {
                        page_size: 500,
                        page_token: page_token.clone(),
                    }),
                })
                .await
                .map_err(Error::from)?
                .into_inner();
            resources.extend(page.resources);
            page_token = page.page.map(|p| p.next_page_token).unwrap_or_default();
            if page_token.is_empty() {
                return Ok(resources);
            }
        }
    }

    async fn invoice_row(&self, invoice_id: &str) -> Result<Option<invoice::Model>> {
        invoice::Entity::find_by_id(invoice_id.to_owned())
            .one(&self.db)
            .await
            .map_err(db_error)
    }

    /// Suspends the account's resources for an overdue invoice (job).
    pub(crate) async fn suspend_for_overdue(&self, invoice_id: &str) -> Result<()> {
        let Some(row) = self.invoice_row(invoice_id).await? else {
            return Ok(());
        };
        if row.state != invoice_state::OVERDUE {
            // Paid or refunded since.
            return Ok(());
        }
        let reason = reason(&row);
        let mut provisioning = self.peers.provisioning.clone();
        for resource in self.account_resources(&row.account_id).await? {
            let usable = resource.status == provisioning_pb::ResourceStatus::Ready as i32
                || resource.status == provisioning_pb::ResourceStatus::Onboarding as i32;
            if !usable || resource.ownership == "linked" {
                continue;
            }
            provisioning
                .suspend_resource(provisioning_pb::SuspendResourceRequest {
                    context: Some(RequestContext {
                        idempotency_key: format!("billing.overdue:{}:{}", row.id, resource.id),
                        actor: None,
                    }),
                    resource_id: resource.id.clone(),
                    reason: reason.clone(),
                })
                .await
                .map_err(Error::from)?;
            tracing::info!(invoice.id = %row.id, resource.id = %resource.id, "resource suspended: invoice overdue");
        }
        Ok(())
    }

    /// Resumes what an overdue invoice suspended, once it is paid or
    /// refunded (job).
    pub(crate) async fn resume_after_settled(&self, invoice_id: &str) -> Result<()> {
        let Some(row) = self.invoice_row(invoice_id).await? else {
            return Ok(());
        };
        if row.state == invoice_state::OVERDUE {
            return Ok(());
        }
        let reason = reason(&row);
        let mut provisioning = self.peers.provisioning.clone();
        for resource in self.account_resources(&row.account_id).await? {
            if resource.status != provisioning_pb::ResourceStatus::Suspended as i32
                || resource.status_message != reason
            {
                continue;
            }
            provisioning
                .resume_resource(provisioning_pb::ResumeResourceRequest {
                    context: Some(RequestContext {
                        idempotency_key: format!("billing.settled:{}:{}", row.id, resource.id),
                        actor: None,
                    }),
                    resource_id: resource.id.clone(),
                })
                .await
                .map_err(Error::from)?;
            tracing::info!(invoice.id = %row.id, resource.id = %resource.id, state = %row.state, "resource resumed: invoice settled");
        }
        Ok(())
    }
}
