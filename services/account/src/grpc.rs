//! The gRPC face of the account service: each method hands its request to
//! the domain and maps the error to a status.

use crate::domain::AccountDomain;
use marketbridge_proto::account::v1 as pb;
use marketbridge_proto::account::v1::account_service_server::AccountService;
use marketbridge_rpc::reply;
use tonic::{Request, Response, Status};

/// Serves `AccountService` over a domain.
#[derive(Clone)]
pub struct AccountGrpc {
    domain: AccountDomain,
}

impl AccountGrpc {
    /// The gRPC service over `domain`.
    pub fn new(domain: AccountDomain) -> Self {
        Self { domain }
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
        reply(self.domain.get(request.into_inner()).await)
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
        reply(self.domain.refresh(request.into_inner()).await)
    }

    #[tracing::instrument(name = "account.approve_signup", skip_all)]
    async fn approve_signup(
        &self,
        request: Request<pb::ApproveSignupRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        reply(self.domain.approve_signup(request.into_inner()).await)
    }

    #[tracing::instrument(name = "account.reject_signup", skip_all)]
    async fn reject_signup(
        &self,
        request: Request<pb::RejectSignupRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        reply(self.domain.reject_signup(request.into_inner()).await)
    }

    #[tracing::instrument(name = "account.reset", skip_all)]
    async fn reset_account(
        &self,
        request: Request<pb::ResetAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        reply(self.domain.reset(request.into_inner()).await)
    }

    #[tracing::instrument(name = "account.delete", skip_all)]
    async fn delete_account(
        &self,
        request: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<pb::DeleteAccountResponse>, Status> {
        reply(self.domain.delete(request.into_inner()).await)
    }

    #[tracing::instrument(name = "account.finalize", skip_all)]
    async fn finalize_account(
        &self,
        request: Request<pb::FinalizeAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        reply(self.domain.finalize(request.into_inner()).await)
    }

    #[tracing::instrument(name = "account.credential", skip_all)]
    async fn get_marketplace_credential(
        &self,
        request: Request<pb::GetMarketplaceCredentialRequest>,
    ) -> Result<Response<pb::MarketplaceCredential>, Status> {
        reply(self.domain.credential(request.into_inner()).await)
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
}
