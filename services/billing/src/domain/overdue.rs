//! Following unpaid invoices (§6 of the Vercel contract): once an invoice
//! is `overdue` (15 days after the first failed payment, automatic retries
//! over) the account's resources are suspended, their data kept; when it is
//! paid, or refunded (a refund on a `notpaid` or `overdue` invoice cancels
//! it), the resources this invoice suspended are resumed. Nothing is deleted
//! for non-payment. Linked (imported) resources are not billed through the
//! marketplace and are left alone.

use super::BillingDomain;
use crate::entity::invoice;
use crate::lifecycle::invoice::InvoiceState;
use marketbridge_core::Result;
use marketbridge_core::ids::{AccountId, InvoiceId};
use marketbridge_proto::common::v1::{PageRequest, RequestContext};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_storage::db_error;
use sea_orm::EntityTrait;

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
    async fn account_resources(
        &self,
        account_id: &AccountId,
    ) -> Result<Vec<provisioning_pb::Resource>> {
        let provisioning = &self.peers.provisioning;
        let mut resources = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = provisioning
                .list_resources(provisioning_pb::ListResourcesRequest {
                    account_id: account_id.as_str().to_owned(),
                    resource_ids: Vec::new(),
                    include_deleted: false,
                    page: Some(PageRequest {
                        page_size: 500,
                        page_token: page_token.clone(),
                    }),
                })
                .await?;
            resources.extend(page.resources);
            page_token = page.page.map(|p| p.next_page_token).unwrap_or_default();
            if page_token.is_empty() {
                return Ok(resources);
            }
        }
    }

    async fn invoice_row(&self, invoice_id: &InvoiceId) -> Result<Option<invoice::Model>> {
        invoice::Entity::find_by_id(invoice_id.as_str())
            .one(&self.db)
            .await
            .map_err(db_error)
    }

    /// Suspends the account's resources for an overdue invoice (job).
    pub(crate) async fn suspend_for_overdue(&self, invoice_id: &InvoiceId) -> Result<()> {
        let Some(row) = self.invoice_row(invoice_id).await? else {
            return Ok(());
        };
        if row.state != InvoiceState::Overdue {
            // Paid or refunded since.
            return Ok(());
        }
        let reason = reason(&row);
        let provisioning = &self.peers.provisioning;
        for resource in self.account_resources(&row.account()?).await? {
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
                .await?;
            tracing::info!(invoice.id = %row.id, resource.id = %resource.id, "resource suspended: invoice overdue");
        }
        Ok(())
    }

    /// Resumes what an overdue invoice suspended, once it is paid or
    /// refunded (job).
    pub(crate) async fn resume_after_settled(&self, invoice_id: &InvoiceId) -> Result<()> {
        let Some(row) = self.invoice_row(invoice_id).await? else {
            return Ok(());
        };
        if row.state == InvoiceState::Overdue {
            return Ok(());
        }
        let reason = reason(&row);
        let provisioning = &self.peers.provisioning;
        for resource in self.account_resources(&row.account()?).await? {
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
                .await?;
            tracing::info!(invoice.id = %row.id, resource.id = %resource.id, state = %row.state, "resource resumed: invoice settled");
        }
        Ok(())
    }
}
