//! The gRPC face of the billing service.

use crate::domain::BillingDomain;
use marketbridge_proto::billing::v1 as pb;
use marketbridge_proto::billing::v1::billing_service_server::BillingService;
use marketbridge_proto::common::v1 as common;
use marketbridge_rpc::auth::caller_name;
use marketbridge_rpc::reply;
use marketbridge_storage::audit::OutboxAdmin;
use tonic::{Request, Response, Status};

/// Serves `BillingService` over a domain.
#[derive(Clone)]
pub struct BillingGrpc {
    domain: BillingDomain,
    admin: OutboxAdmin,
}

impl BillingGrpc {
    /// The gRPC service over `domain`.
    pub fn new(domain: BillingDomain) -> Self {
        let admin = OutboxAdmin::new(domain.db().clone(), domain.outbox().clone());
        Self { domain, admin }
    }
}

#[tonic::async_trait]
impl BillingService for BillingGrpc {
    #[tracing::instrument(name = "billing.list_plans", skip_all)]
    async fn list_plans(
        &self,
        request: Request<pb::ListPlansRequest>,
    ) -> Result<Response<pb::ListPlansResponse>, Status> {
        reply(self.domain.list_plans(request.into_inner()).await)
    }

    #[tracing::instrument(name = "billing.get_plan", skip_all)]
    async fn get_plan(
        &self,
        request: Request<pb::GetPlanRequest>,
    ) -> Result<Response<pb::Plan>, Status> {
        reply(self.domain.get_plan(request.into_inner()).await)
    }

    #[tracing::instrument(name = "billing.record_subscription_change", skip_all)]
    async fn record_subscription_change(
        &self,
        request: Request<pb::RecordSubscriptionChangeRequest>,
    ) -> Result<Response<pb::RecordSubscriptionChangeResponse>, Status> {
        reply(
            self.domain
                .record_subscription_change(request.into_inner())
                .await,
        )
    }

    #[tracing::instrument(name = "billing.record_usage", skip_all)]
    async fn record_usage(
        &self,
        request: Request<pb::RecordUsageRequest>,
    ) -> Result<Response<pb::RecordUsageResponse>, Status> {
        reply(self.domain.record_usage(request.into_inner()).await)
    }

    #[tracing::instrument(name = "billing.query_usage", skip_all)]
    async fn query_usage(
        &self,
        request: Request<pb::QueryUsageRequest>,
    ) -> Result<Response<pb::QueryUsageResponse>, Status> {
        reply(self.domain.query_usage(request.into_inner()).await)
    }

    #[tracing::instrument(name = "billing.list_invoices", skip_all)]
    async fn list_invoices(
        &self,
        request: Request<pb::ListInvoicesRequest>,
    ) -> Result<Response<pb::ListInvoicesResponse>, Status> {
        reply(self.domain.list_invoices(request.into_inner()).await)
    }

    #[tracing::instrument(name = "billing.get_invoice", skip_all)]
    async fn get_invoice(
        &self,
        request: Request<pb::GetInvoiceRequest>,
    ) -> Result<Response<pb::Invoice>, Status> {
        reply(self.domain.get_invoice(request.into_inner()).await)
    }

    #[tracing::instrument(name = "billing.record_invoice_state", skip_all)]
    async fn record_invoice_state(
        &self,
        request: Request<pb::RecordInvoiceStateRequest>,
    ) -> Result<Response<pb::Invoice>, Status> {
        reply(self.domain.record_invoice_state(request.into_inner()).await)
    }

    #[tracing::instrument(name = "billing.refund_invoice", skip_all)]
    async fn refund_invoice(
        &self,
        request: Request<pb::RefundInvoiceRequest>,
    ) -> Result<Response<pb::Invoice>, Status> {
        reply(self.domain.refund_invoice(request.into_inner()).await)
    }

    #[tracing::instrument(name = "billing.provision_prepayment", skip_all)]
    async fn provision_prepayment(
        &self,
        request: Request<pb::ProvisionPrepaymentRequest>,
    ) -> Result<Response<pb::Balances>, Status> {
        reply(self.domain.provision_prepayment(request.into_inner()).await)
    }

    #[tracing::instrument(name = "billing.get_balances", skip_all)]
    async fn get_balances(
        &self,
        request: Request<pb::GetBalancesRequest>,
    ) -> Result<Response<pb::Balances>, Status> {
        reply(self.domain.get_balances(request.into_inner()).await)
    }

    #[tracing::instrument(name = "billing.close_account_billing", skip_all)]
    async fn close_account_billing(
        &self,
        request: Request<pb::CloseAccountBillingRequest>,
    ) -> Result<Response<pb::CloseAccountBillingResponse>, Status> {
        reply(
            self.domain
                .close_account_billing(request.into_inner())
                .await,
        )
    }

    #[tracing::instrument(name = "billing.list_usage_reports", skip_all)]
    async fn list_usage_reports(
        &self,
        request: Request<pb::ListUsageReportsRequest>,
    ) -> Result<Response<pb::ListUsageReportsResponse>, Status> {
        reply(self.domain.list_usage_reports(request.into_inner()).await)
    }

    #[tracing::instrument(name = "billing.list_outbox_jobs", skip_all)]
    async fn list_outbox_jobs(
        &self,
        request: Request<common::ListOutboxJobsRequest>,
    ) -> Result<Response<common::ListOutboxJobsResponse>, Status> {
        reply(self.admin.list_jobs(request.into_inner()).await)
    }

    #[tracing::instrument(name = "billing.retry_outbox_job", skip_all)]
    async fn retry_outbox_job(
        &self,
        request: Request<common::OutboxJobActionRequest>,
    ) -> Result<Response<common::OutboxJob>, Status> {
        let actor = caller_name(&request);
        reply(self.admin.retry(&actor, request.into_inner()).await)
    }

    #[tracing::instrument(name = "billing.discard_outbox_job", skip_all)]
    async fn discard_outbox_job(
        &self,
        request: Request<common::OutboxJobActionRequest>,
    ) -> Result<Response<common::OutboxJob>, Status> {
        let actor = caller_name(&request);
        reply(self.admin.discard(&actor, request.into_inner()).await)
    }

    #[tracing::instrument(name = "billing.list_audit_entries", skip_all)]
    async fn list_audit_entries(
        &self,
        request: Request<common::ListAuditEntriesRequest>,
    ) -> Result<Response<common::ListAuditEntriesResponse>, Status> {
        reply(self.admin.list_audit(request.into_inner()).await)
    }
}
