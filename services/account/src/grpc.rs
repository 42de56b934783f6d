//! The gRPC face of the account service: each method parses the account its
//! request names into a typed key, hands both to the domain and maps the
//! error to a status.

use crate::convert::account_key;
use crate::domain::AccountDomain;
use marketbridge_proto::account::v1 as pb;
use marketbridge_proto::account::v1::account_service_server::AccountService;
use marketbridge_proto::common::v1 as common;
use marketbridge_rpc::auth::{caller_name, operator};
use marketbridge_rpc::reply;
use marketbridge_storage::audit::{Action, OutboxAdmin};
use tonic::{Request, Response, Status};

/// Serves `AccountService` over a domain.
#[derive(Clone)]
pub struct AccountGrpc {
    domain: AccountDomain,
    admin: OutboxAdmin,
}

impl AccountGrpc {
    /// The gRPC service over `domain`.
    pub fn new(domain: AccountDomain) -> Self {
        let admin = OutboxAdmin::new(domain.db().clone(), domain.outbox().clone());
        Self { domain, admin }
    }
}

/// Our account id a selector names, if it names one by our id.
fn selected(selector: Option<&common::AccountSelector>) -> String {
    match selector.and_then(|s| s.selector.as_ref()) {
        Some(common::account_selector::Selector::AccountId(id)) => id.clone(),
        Some(common::account_selector::Selector::MarketplaceRef(r)) => r.external_id.clone(),
        None => String::new(),
    }
}

#[tonic::async_trait]
impl AccountService for AccountGrpc {
    #[tracing::instrument(name = "account.upsert", skip_all)]
    async fn upsert_account(
        &self,
        request: Request<pb::UpsertAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        reply(self.domain.upsert(request.into_inner()).await)
    }

    #[tracing::instrument(name = "account.get", skip_all)]
    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let request = request.into_inner();
        reply(
            async {
                let account = account_key(request.account.as_ref())?;
                self.domain.get(&account).await
            }
            .await,
        )
    }

    #[tracing::instrument(name = "account.list", skip_all)]
    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        reply(self.domain.list(request.into_inner()).await)
    }

    #[tracing::instrument(name = "account.refresh", skip_all)]
    async fn refresh_account(
        &self,
        request: Request<pb::RefreshAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let actor = operator(&request);
        let request = request.into_inner();
        let action = Action::new("", "account.refresh", &selected(request.account.as_ref()));
        let answer = async {
            let account = account_key(request.account.as_ref())?;
            self.domain.refresh(&account).await
        }
        .await;
        reply(
            self.admin
                .audit()
                .record_for(actor, action, answer, |a| a.id.clone())
                .await,
        )
    }

    #[tracing::instrument(name = "account.approve_signup", skip_all)]
    async fn approve_signup(
        &self,
        request: Request<pb::ApproveSignupRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let actor = operator(&request);
        let request = request.into_inner();
        let action = Action::new("", "signup.approve", &selected(request.account.as_ref()))
            .detail(&request.company);
        let answer = async {
            let account = account_key(request.account.as_ref())?;
            self.domain.approve_signup(&account, request).await
        }
        .await;
        reply(
            self.admin
                .audit()
                .record_for(actor, action, answer, |a| a.id.clone())
                .await,
        )
    }

    #[tracing::instrument(name = "account.reject_signup", skip_all)]
    async fn reject_signup(
        &self,
        request: Request<pb::RejectSignupRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let actor = operator(&request);
        let request = request.into_inner();
        let action = Action::new("", "signup.reject", &selected(request.account.as_ref()))
            .detail(&request.reason);
        let answer = async {
            let account = account_key(request.account.as_ref())?;
            self.domain.reject_signup(&account, request).await
        }
        .await;
        reply(
            self.admin
                .audit()
                .record_for(actor, action, answer, |a| a.id.clone())
                .await,
        )
    }

    #[tracing::instrument(name = "account.reset", skip_all)]
    async fn reset_account(
        &self,
        request: Request<pb::ResetAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let request = request.into_inner();
        reply(
            async {
                let account = account_key(request.account.as_ref())?;
                self.domain.reset(&account, request).await
            }
            .await,
        )
    }

    #[tracing::instrument(name = "account.delete", skip_all)]
    async fn delete_account(
        &self,
        request: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<pb::DeleteAccountResponse>, Status> {
        let request = request.into_inner();
        reply(
            async {
                let account = account_key(request.account.as_ref())?;
                self.domain.delete(&account, request).await
            }
            .await,
        )
    }

    #[tracing::instrument(name = "account.finalize", skip_all)]
    async fn finalize_account(
        &self,
        request: Request<pb::FinalizeAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let request = request.into_inner();
        reply(
            async {
                let account = account_key(request.account.as_ref())?;
                self.domain.finalize(&account, request).await
            }
            .await,
        )
    }

    #[tracing::instrument(name = "account.credential", skip_all)]
    async fn get_marketplace_credential(
        &self,
        request: Request<pb::GetMarketplaceCredentialRequest>,
    ) -> Result<Response<pb::MarketplaceCredential>, Status> {
        let request = request.into_inner();
        reply(
            async {
                let account = account_key(request.account.as_ref())?;
                self.domain.credential(&account, request).await
            }
            .await,
        )
    }

    #[tracing::instrument(name = "account.rotate_credential", skip_all)]
    async fn rotate_marketplace_credential(
        &self,
        request: Request<pb::RotateMarketplaceCredentialRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let request = request.into_inner();
        reply(
            async {
                let account = account_key(request.account.as_ref())?;
                self.domain.rotate_credential(&account, request).await
            }
            .await,
        )
    }

    #[tracing::instrument(name = "account.mark_gone", skip_all)]
    async fn mark_marketplace_gone(
        &self,
        request: Request<pb::MarkMarketplaceGoneRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let request = request.into_inner();
        reply(
            async {
                let account = account_key(request.account.as_ref())?;
                self.domain.mark_gone(&account, request).await
            }
            .await,
        )
    }

    #[tracing::instrument(name = "account.resolve_purchase", skip_all)]
    async fn resolve_purchase(
        &self,
        request: Request<pb::ResolvePurchaseRequest>,
    ) -> Result<Response<pb::ResolvePurchaseResponse>, Status> {
        reply(self.domain.resolve_purchase(request.into_inner()).await)
    }

    #[tracing::instrument(name = "account.record_event", skip_all)]
    async fn record_marketplace_event(
        &self,
        request: Request<pb::RecordMarketplaceEventRequest>,
    ) -> Result<Response<pb::RecordMarketplaceEventResponse>, Status> {
        reply(self.domain.record_event(request.into_inner()).await)
    }

    #[tracing::instrument(name = "account.list_events", skip_all)]
    async fn list_marketplace_events(
        &self,
        request: Request<pb::ListMarketplaceEventsRequest>,
    ) -> Result<Response<pb::ListMarketplaceEventsResponse>, Status> {
        reply(self.domain.list_events(request.into_inner()).await)
    }

    #[tracing::instrument(name = "account.list_outbox_jobs", skip_all)]
    async fn list_outbox_jobs(
        &self,
        request: Request<common::ListOutboxJobsRequest>,
    ) -> Result<Response<common::ListOutboxJobsResponse>, Status> {
        reply(self.admin.list_jobs(request.into_inner()).await)
    }

    #[tracing::instrument(name = "account.retry_outbox_job", skip_all)]
    async fn retry_outbox_job(
        &self,
        request: Request<common::OutboxJobActionRequest>,
    ) -> Result<Response<common::OutboxJob>, Status> {
        let actor = caller_name(&request);
        reply(self.admin.retry(&actor, request.into_inner()).await)
    }

    #[tracing::instrument(name = "account.discard_outbox_job", skip_all)]
    async fn discard_outbox_job(
        &self,
        request: Request<common::OutboxJobActionRequest>,
    ) -> Result<Response<common::OutboxJob>, Status> {
        let actor = caller_name(&request);
        reply(self.admin.discard(&actor, request.into_inner()).await)
    }

    #[tracing::instrument(name = "account.list_audit_entries", skip_all)]
    async fn list_audit_entries(
        &self,
        request: Request<common::ListAuditEntriesRequest>,
    ) -> Result<Response<common::ListAuditEntriesResponse>, Status> {
        reply(self.admin.list_audit(request.into_inner()).await)
    }

    #[tracing::instrument(name = "account.who_am_i", skip_all)]
    async fn who_am_i(
        &self,
        request: Request<common::WhoAmIRequest>,
    ) -> Result<Response<common::WhoAmIResponse>, Status> {
        Ok(Response::new(marketbridge_rpc::auth::who_am_i(&request)))
    }
}
