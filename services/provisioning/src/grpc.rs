//! The gRPC face of the provisioning service.

use crate::domain::ProvisioningDomain;
use marketbridge_core::ids::ResourceId;
use marketbridge_proto::common::v1 as common;
use marketbridge_proto::provisioning::v1 as pb;
use marketbridge_proto::provisioning::v1::provisioning_service_server::ProvisioningService;
use marketbridge_rpc::auth::{caller_name, operator};
use marketbridge_rpc::reply;
use marketbridge_storage::audit::{Action, OutboxAdmin};
use tonic::{Request, Response, Status};

/// Serves `ProvisioningService` over a domain.
#[derive(Clone)]
pub struct ProvisioningGrpc {
    domain: ProvisioningDomain,
    admin: OutboxAdmin,
}

impl ProvisioningGrpc {
    /// The gRPC service over `domain`.
    pub fn new(domain: ProvisioningDomain) -> Self {
        let admin = OutboxAdmin::new(domain.db().clone(), domain.outbox().clone());
        Self { domain, admin }
    }
}

#[tonic::async_trait]
impl ProvisioningService for ProvisioningGrpc {
    #[tracing::instrument(name = "provisioning.upsert_subscription", skip_all)]
    async fn upsert_subscription(
        &self,
        request: Request<pb::UpsertSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        reply(self.domain.upsert_subscription(request.into_inner()).await)
    }

    #[tracing::instrument(name = "provisioning.sync_subscription", skip_all)]
    async fn sync_subscription(
        &self,
        request: Request<pb::SyncSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let actor = operator(&request);
        let request = request.into_inner();
        let target = request
            .marketplace_ref
            .as_ref()
            .map(|r| r.external_id.clone())
            .unwrap_or_default();
        let action = Action::new("", "subscription.sync", &target);
        let answer = self.domain.sync_subscription(request).await;
        reply(
            self.admin
                .audit()
                .record_for(actor, action, answer, |s| s.account_id.clone())
                .await,
        )
    }

    #[tracing::instrument(name = "provisioning.get_subscription", skip_all)]
    async fn get_subscription(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        reply(self.domain.get_subscription(request.into_inner()).await)
    }

    #[tracing::instrument(name = "provisioning.list_subscriptions", skip_all)]
    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        reply(self.domain.list_subscriptions(request.into_inner()).await)
    }

    #[tracing::instrument(name = "provisioning.approve_subscription", skip_all)]
    async fn approve_subscription(
        &self,
        request: Request<pb::ApproveSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        reply(self.domain.approve_subscription(request.into_inner()).await)
    }

    #[tracing::instrument(name = "provisioning.reject_subscription", skip_all)]
    async fn reject_subscription(
        &self,
        request: Request<pb::RejectSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        reply(self.domain.reject_subscription(request.into_inner()).await)
    }

    #[tracing::instrument(name = "provisioning.approve_plan_change", skip_all)]
    async fn approve_plan_change(
        &self,
        request: Request<pb::ApprovePlanChangeRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        reply(self.domain.approve_plan_change(request.into_inner()).await)
    }

    #[tracing::instrument(name = "provisioning.reject_plan_change", skip_all)]
    async fn reject_plan_change(
        &self,
        request: Request<pb::RejectPlanChangeRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        reply(self.domain.reject_plan_change(request.into_inner()).await)
    }

    #[tracing::instrument(name = "provisioning.change_plan", skip_all)]
    async fn change_plan(
        &self,
        request: Request<pb::ChangePlanRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        reply(self.domain.change_plan(request.into_inner()).await)
    }

    #[tracing::instrument(name = "provisioning.cancel_subscription", skip_all)]
    async fn cancel_subscription(
        &self,
        request: Request<pb::CancelSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        reply(self.domain.cancel_subscription(request.into_inner()).await)
    }

    #[tracing::instrument(name = "provisioning.notify_account_approved", skip_all)]
    async fn notify_account_approved(
        &self,
        request: Request<pb::NotifyAccountApprovedRequest>,
    ) -> Result<Response<pb::NotifyAccountApprovedResponse>, Status> {
        reply(
            self.domain
                .notify_account_approved(request.into_inner())
                .await,
        )
    }

    #[tracing::instrument(name = "provisioning.create_resource", skip_all)]
    async fn create_resource(
        &self,
        request: Request<pb::CreateResourceRequest>,
    ) -> Result<Response<pb::CreateResourceResponse>, Status> {
        reply(self.domain.create_resource(request.into_inner()).await)
    }

    #[tracing::instrument(name = "provisioning.get_resource", skip_all)]
    async fn get_resource(
        &self,
        request: Request<pb::GetResourceRequest>,
    ) -> Result<Response<pb::Resource>, Status> {
        reply(self.domain.get_resource(request.into_inner()).await)
    }

    #[tracing::instrument(name = "provisioning.list_resources", skip_all)]
    async fn list_resources(
        &self,
        request: Request<pb::ListResourcesRequest>,
    ) -> Result<Response<pb::ListResourcesResponse>, Status> {
        reply(self.domain.list_resources(request.into_inner()).await)
    }

    #[tracing::instrument(name = "provisioning.update_resource", skip_all)]
    async fn update_resource(
        &self,
        request: Request<pb::UpdateResourceRequest>,
    ) -> Result<Response<pb::Resource>, Status> {
        reply(self.domain.update_resource(request.into_inner()).await)
    }

    #[tracing::instrument(name = "provisioning.delete_resource", skip_all)]
    async fn delete_resource(
        &self,
        request: Request<pb::DeleteResourceRequest>,
    ) -> Result<Response<pb::Resource>, Status> {
        reply(self.domain.delete_resource(request.into_inner()).await)
    }

    #[tracing::instrument(name = "provisioning.rotate_secrets", skip_all)]
    async fn rotate_secrets(
        &self,
        request: Request<pb::RotateSecretsRequest>,
    ) -> Result<Response<pb::RotateSecretsResponse>, Status> {
        reply(self.domain.rotate_secrets(request.into_inner()).await)
    }

    #[tracing::instrument(name = "provisioning.get_resource_secrets", skip_all)]
    async fn get_resource_secrets(
        &self,
        request: Request<pb::GetResourceSecretsRequest>,
    ) -> Result<Response<pb::GetResourceSecretsResponse>, Status> {
        reply(self.domain.resource_secrets(request.into_inner()).await)
    }

    #[tracing::instrument(name = "provisioning.suspend_resource", skip_all)]
    async fn suspend_resource(
        &self,
        request: Request<pb::SuspendResourceRequest>,
    ) -> Result<Response<pb::Resource>, Status> {
        let actor = operator(&request);
        let request = request.into_inner();
        let action =
            Action::new("", "resource.suspend", &request.resource_id).detail(&request.reason);
        let answer = match ResourceId::parse("resourceId", &request.resource_id) {
            Ok(resource_id) => {
                self.domain
                    .set_suspended(
                        request.context.as_ref(),
                        &resource_id,
                        true,
                        &request.reason,
                        &request,
                    )
                    .await
            }
            Err(error) => Err(error),
        };
        reply(
            self.admin
                .audit()
                .record_for(actor, action, answer, |r| r.account_id.clone())
                .await,
        )
    }

    #[tracing::instrument(name = "provisioning.resume_resource", skip_all)]
    async fn resume_resource(
        &self,
        request: Request<pb::ResumeResourceRequest>,
    ) -> Result<Response<pb::Resource>, Status> {
        let actor = operator(&request);
        let request = request.into_inner();
        let action = Action::new("", "resource.resume", &request.resource_id);
        let answer = match ResourceId::parse("resourceId", &request.resource_id) {
            Ok(resource_id) => {
                self.domain
                    .set_suspended(request.context.as_ref(), &resource_id, false, "", &request)
                    .await
            }
            Err(error) => Err(error),
        };
        reply(
            self.admin
                .audit()
                .record_for(actor, action, answer, |r| r.account_id.clone())
                .await,
        )
    }

    #[tracing::instrument(name = "provisioning.delete_account_resources", skip_all)]
    async fn delete_account_resources(
        &self,
        request: Request<pb::DeleteAccountResourcesRequest>,
    ) -> Result<Response<pb::DeleteAccountResourcesResponse>, Status> {
        reply(
            self.domain
                .delete_account_resources(request.into_inner())
                .await,
        )
    }

    #[tracing::instrument(name = "provisioning.record_project_connection", skip_all)]
    async fn record_project_connection(
        &self,
        request: Request<pb::RecordProjectConnectionRequest>,
    ) -> Result<Response<pb::Resource>, Status> {
        reply(self.domain.record_connection(request.into_inner()).await)
    }

    #[tracing::instrument(name = "provisioning.check_entitlement", skip_all)]
    async fn check_entitlement(
        &self,
        request: Request<pb::CheckEntitlementRequest>,
    ) -> Result<Response<pb::CheckEntitlementResponse>, Status> {
        reply(self.domain.check_entitlement(request.into_inner()).await)
    }
    #[tracing::instrument(name = "provisioning.create_transfer_claim", skip_all)]
    async fn create_transfer_claim(
        &self,
        request: Request<pb::CreateTransferClaimRequest>,
    ) -> Result<Response<pb::TransferClaim>, Status> {
        reply(
            self.domain
                .create_transfer_claim(request.into_inner())
                .await,
        )
    }

    #[tracing::instrument(name = "provisioning.verify_transfer_claim", skip_all)]
    async fn verify_transfer_claim(
        &self,
        request: Request<pb::VerifyTransferClaimRequest>,
    ) -> Result<Response<pb::VerifyTransferClaimResponse>, Status> {
        reply(
            self.domain
                .verify_transfer_claim(request.into_inner())
                .await,
        )
    }

    #[tracing::instrument(name = "provisioning.accept_transfer_claim", skip_all)]
    async fn accept_transfer_claim(
        &self,
        request: Request<pb::AcceptTransferClaimRequest>,
    ) -> Result<Response<pb::TransferClaim>, Status> {
        reply(
            self.domain
                .accept_transfer_claim(request.into_inner())
                .await,
        )
    }

    #[tracing::instrument(name = "provisioning.register_importable_resource", skip_all)]
    async fn register_importable_resource(
        &self,
        request: Request<pb::RegisterImportableResourceRequest>,
    ) -> Result<Response<pb::ImportableResource>, Status> {
        reply(self.domain.register_importable(request.into_inner()).await)
    }

    #[tracing::instrument(name = "provisioning.list_importable_resources", skip_all)]
    async fn list_importable_resources(
        &self,
        request: Request<pb::ListImportableResourcesRequest>,
    ) -> Result<Response<pb::ListImportableResourcesResponse>, Status> {
        reply(self.domain.list_importable(request.into_inner()).await)
    }

    #[tracing::instrument(name = "provisioning.import_resource", skip_all)]
    async fn import_resource(
        &self,
        request: Request<pb::ImportResourceRequest>,
    ) -> Result<Response<pb::CreateResourceResponse>, Status> {
        reply(self.domain.import_resource(request.into_inner()).await)
    }

    #[tracing::instrument(name = "provisioning.run_resource_command", skip_all)]
    async fn run_resource_command(
        &self,
        request: Request<pb::RunResourceCommandRequest>,
    ) -> Result<Response<pb::RunResourceCommandResponse>, Status> {
        reply(self.domain.run_resource_command(request.into_inner()).await)
    }

    #[tracing::instrument(name = "provisioning.list_outbox_jobs", skip_all)]
    async fn list_outbox_jobs(
        &self,
        request: Request<common::ListOutboxJobsRequest>,
    ) -> Result<Response<common::ListOutboxJobsResponse>, Status> {
        reply(self.admin.list_jobs(request.into_inner()).await)
    }

    #[tracing::instrument(name = "provisioning.retry_outbox_job", skip_all)]
    async fn retry_outbox_job(
        &self,
        request: Request<common::OutboxJobActionRequest>,
    ) -> Result<Response<common::OutboxJob>, Status> {
        let actor = caller_name(&request);
        reply(self.admin.retry(&actor, request.into_inner()).await)
    }

    #[tracing::instrument(name = "provisioning.discard_outbox_job", skip_all)]
    async fn discard_outbox_job(
        &self,
        request: Request<common::OutboxJobActionRequest>,
    ) -> Result<Response<common::OutboxJob>, Status> {
        let actor = caller_name(&request);
        reply(self.admin.discard(&actor, request.into_inner()).await)
    }

    #[tracing::instrument(name = "provisioning.list_audit_entries", skip_all)]
    async fn list_audit_entries(
        &self,
        request: Request<common::ListAuditEntriesRequest>,
    ) -> Result<Response<common::ListAuditEntriesResponse>, Status> {
        reply(self.admin.list_audit(request.into_inner()).await)
    }
}
