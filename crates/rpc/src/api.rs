//! The services as Rust traits: callers (the gateway, the other services,
//! tests) depend on [`AccountApi`], [`ProvisioningApi`] and [`BillingApi`],
//! never on tonic's request, response and status types.
//!
//! Each trait has two implementations: the gRPC client of the service
//! ([`AccountClient`], ...), which crosses the network with the caller's
//! credentials and the trace context, and [`InProcess`], which calls a
//! service implementation living in the same process as the set's own
//! caller. Both answer with the same messages and the same
//! [`marketbridge_core::Error`] codes, since the gRPC path converts the status
//! the service produced back into the error it came from.

use crate::auth::{Caller, authorize};
use crate::client::{AccountClient, BillingClient, ProvisioningClient};
use async_trait::async_trait;
use marketbridge_core::{Error, Result};
use marketbridge_proto::account::v1 as account;
use marketbridge_proto::billing::v1 as billing;
use marketbridge_proto::common::v1 as common;
use marketbridge_proto::provisioning::v1 as provisioning;
use marketbridge_telemetry::InProcessCall;
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, Instant};
use tonic::TimeoutExpired;
use tracing::Instrument;

/// A service implementation called in this process, as the set's own
/// caller (the one the services' gRPC servers would see for an internal
/// call), without a network hop.
///
/// A call behaves as the same call over gRPC would: the method's scope is
/// checked for the caller, a client span and a server span (naming the
/// caller) are opened below the current span with the same names and
/// attributes, the call counts in the same metrics, it must not be made
/// while a database transaction is open, the deadline (when set) answers
/// as the gRPC client's does, and the service's status comes back as the
/// same [`marketbridge_core::Error`].
pub struct InProcess<S> {
    service: Arc<S>,
    caller: Caller,
    deadline: Option<Duration>,
}

impl<S> Clone for InProcess<S> {
    fn clone(&self) -> Self {
        Self {
            service: self.service.clone(),
            caller: self.caller.clone(),
            deadline: self.deadline,
        }
    }
}

impl<S> std::fmt::Debug for InProcess<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess")
            .field("caller", &self.caller)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl<S> InProcess<S> {
    /// Calls `service` directly, as the set's own caller, with no deadline.
    pub fn new(service: S) -> Self {
        Self::shared(Arc::new(service))
    }

    /// Calls the shared `service` directly, as the set's own caller, with
    /// no deadline.
    pub fn shared(service: Arc<S>) -> Self {
        Self {
            service,
            caller: Caller::set(),
            deadline: None,
        }
    }

    /// Calls as `caller` instead of the set's own caller (held to its
    /// scopes as the gRPC server would hold it).
    #[must_use]
    pub fn as_caller(mut self, caller: Caller) -> Self {
        self.caller = caller;
        self
    }

    /// Every call has `deadline` to finish, as a gRPC channel's calls do
    /// ([`crate::client::channel`]).
    #[must_use]
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.extensions_mut().insert(self.caller.clone());
        request
    }

    /// Runs `served` (the service's answer to a call) as the call `call`.
    async fn run<T>(
        &self,
        call: &InProcessCall,
        served: impl Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T> {
        marketbridge_telemetry::transactions::check_no_open_transaction(call.path());
        let client = call.client_span();
        let server = call.server_span(&client, &self.caller.name);
        let started = Instant::now();
        let answer = async {
            authorize(&self.caller, call.path())?;
            let served = served.instrument(server);
            match self.deadline {
                Some(deadline) => {
                    tokio::time::timeout(deadline, served)
                        .await
                        .unwrap_or_else(|_| {
                            Err(tonic::Status::cancelled(TimeoutExpired(()).to_string()))
                        })
                }
                None => served.await,
            }
        }
        .instrument(client)
        .await;
        let code = answer.as_ref().map_or_else(|s| s.code() as i64, |_| 0);
        call.record(code, started.elapsed());
        answer.map(tonic::Response::into_inner).map_err(Error::from)
    }
}

/// A service trait whose calls go nowhere until it is wired with
/// [`Deferred::wire`]: the services of one process need each other, so each
/// is given the others before they exist. A call before wiring answers
/// `UNAVAILABLE`.
pub struct Deferred<T: ?Sized> {
    target: Arc<OnceLock<Arc<T>>>,
}

impl<T: ?Sized> Clone for Deferred<T> {
    fn clone(&self) -> Self {
        Self {
            target: self.target.clone(),
        }
    }
}

impl<T: ?Sized> Default for Deferred<T> {
    fn default() -> Self {
        Self {
            target: Arc::new(OnceLock::new()),
        }
    }
}

impl<T: ?Sized> std::fmt::Debug for Deferred<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deferred")
            .field("wired", &self.target.get().is_some())
            .finish()
    }
}

impl<T: ?Sized> Deferred<T> {
    /// Not wired yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends every call (of every clone) to `target` from now on; a second
    /// wiring is ignored.
    pub fn wire(&self, target: Arc<T>) {
        let _ = self.target.set(target);
    }

    fn target(&self) -> Result<&T> {
        self.target
            .get()
            .map(AsRef::as_ref)
            .ok_or_else(|| Error::unavailable("the service is not wired yet"))
    }
}

/// Declares a service trait with its gRPC-client and in-process
/// implementations from one list of methods.
macro_rules! service_api {
    (
        $(#[$doc:meta])*
        pub trait $trait:ident: $client:ty, $server:path, $component:literal, $service_name:path {
            $(
                $(#[$method_doc:meta])*
                fn $method:ident($request:ty) -> $response:ty;
            )*
        }
    ) => {
        $(#[$doc])*
        #[async_trait]
        pub trait $trait: Send + Sync + 'static {
            $(
                $(#[$method_doc])*
                async fn $method(&self, request: $request) -> Result<$response>;
            )*
        }

        #[async_trait]
        impl $trait for $client {
            $(
                async fn $method(&self, request: $request) -> Result<$response> {
                    let mut client = self.clone();
                    <$client>::$method(&mut client, request)
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(Error::from)
                }
            )*
        }

        #[async_trait]
        impl<S: $server> $trait for InProcess<S> {
            $(
                async fn $method(&self, request: $request) -> Result<$response> {
                    static CALL: LazyLock<InProcessCall> = LazyLock::new(|| {
                        InProcessCall::new($component, $service_name, stringify!($method))
                    });
                    let served = <S as $server>::$method(&self.service, self.request(request));
                    self.run(&CALL, served).await
                }
            )*
        }

        #[async_trait]
        impl $trait for Deferred<dyn $trait> {
            $(
                async fn $method(&self, request: $request) -> Result<$response> {
                    self.target()?.$method(request).await
                }
            )*
        }
    };
}

service_api! {
    /// The account service as its callers see it: plain messages in, the
    /// answer or a [`marketbridge_core::Error`] out. [`AccountClient`] calls it
    /// over gRPC; [`InProcess`] calls an implementation in this process.
    pub trait AccountApi: AccountClient, account::account_service_server::AccountService, "account", account::account_service_server::SERVICE_NAME {
        /// `UpsertAccount`: creates the account for a marketplace identity, or updates it when it
        /// exists (last writer wins).
        fn upsert_account(account::UpsertAccountRequest) -> account::Account;
        /// `GetAccount`: returns one account by id or marketplace identity.
        fn get_account(account::GetAccountRequest) -> account::Account;
        /// `ListAccounts`: lists accounts, newest first.
        fn list_accounts(account::ListAccountsRequest) -> account::ListAccountsResponse;
        /// `RefreshAccount`: re-reads the account from the marketplace's API (Google
        /// `accounts.get`, Vercel `GET /v1/installations/{id}/account`) and stores what it says.
        fn refresh_account(account::RefreshAccountRequest) -> account::Account;
        /// `ApproveSignup`: records that the customer completed the provider's signup (the people
        /// and company behind the account) and approves the account with the marketplace.
        fn approve_signup(account::ApproveSignupRequest) -> account::Account;
        /// `RejectSignup`: rejects the account's signup with the marketplace, with a reason.
        fn reject_signup(account::RejectSignupRequest) -> account::Account;
        /// `ResetAccount`: resets the account with the marketplace (a test tool at Google: cancels
        /// every entitlement and puts signup back to PENDING).
        fn reset_account(account::ResetAccountRequest) -> account::Account;
        /// `DeleteAccount`: soft-deletes the account.
        fn delete_account(account::DeleteAccountRequest) -> account::DeleteAccountResponse;
        /// `FinalizeAccount`: marks a DELETION_PENDING account as finalized (its last invoice is
        /// out).
        fn finalize_account(account::FinalizeAccountRequest) -> account::Account;
        /// `GetMarketplaceCredential`: returns the decrypted marketplace credential of an account,
        /// for the services that call the marketplace on its behalf.
        fn get_marketplace_credential(account::GetMarketplaceCredentialRequest) -> account::MarketplaceCredential;
        /// `RotateMarketplaceCredential`: operators (admin scope): rotates the account's
        /// marketplace credential through the outbox (Vercel `credentials/rotate`, then
        /// `credentials/revoke` of the old one).
        fn rotate_marketplace_credential(account::RotateMarketplaceCredentialRequest) -> account::Account;
        /// `MarkMarketplaceGone`: internal: records that the marketplace answered `410 Gone` for
        /// the account (the installation no longer exists there).
        fn mark_marketplace_gone(account::MarkMarketplaceGoneRequest) -> account::Account;
        /// `RecordMarketplaceEvent`: durably records a notification a marketplace sent (a Vercel
        /// webhook, a Google Pub/Sub message) and schedules its processing in the same transaction.
        fn record_marketplace_event(account::RecordMarketplaceEventRequest) -> account::RecordMarketplaceEventResponse;
        /// `ResolvePurchase`: resolves a marketplace's purchase token (AWS, Azure) into the account
        /// it belongs to, recording it and a `purchase.resolved` event.
        fn resolve_purchase(account::ResolvePurchaseRequest) -> account::ResolvePurchaseResponse;
        /// `ListMarketplaceEvents`: lists recorded marketplace events with their processing
        /// outcome.
        fn list_marketplace_events(account::ListMarketplaceEventsRequest) -> account::ListMarketplaceEventsResponse;
        /// `ListOutboxJobs`: operators (admin scope): the outbox's jobs, newest first, with counts
        /// by status.
        fn list_outbox_jobs(common::ListOutboxJobsRequest) -> common::ListOutboxJobsResponse;
        /// `RetryOutboxJob`: operators: runs a dead-lettered or waiting job now, with a fresh
        /// attempt budget.
        fn retry_outbox_job(common::OutboxJobActionRequest) -> common::OutboxJob;
        /// `DiscardOutboxJob`: operators: gives up a job that is not running or done: it is marked
        /// `discarded` and never runs.
        fn discard_outbox_job(common::OutboxJobActionRequest) -> common::OutboxJob;
        /// `ListAuditEntries`: operators: the audit log of operator actions on this service, newest
        /// first.
        fn list_audit_entries(common::ListAuditEntriesRequest) -> common::ListAuditEntriesResponse;
        /// `WhoAmI`: any caller: its own name and scopes (the operator console's sign-in).
        fn who_am_i(common::WhoAmIRequest) -> common::WhoAmIResponse;
    }
}

service_api! {
    /// The provisioning service as its callers see it: plain messages in, the
    /// answer or a [`marketbridge_core::Error`] out. [`ProvisioningClient`] calls it
    /// over gRPC; [`InProcess`] calls an implementation in this process.
    pub trait ProvisioningApi: ProvisioningClient, provisioning::provisioning_service_server::ProvisioningService, "provisioning", provisioning::provisioning_service_server::SERVICE_NAME {
        /// `UpsertSubscription`: records a subscription as the marketplace describes it, creating
        /// it when new.
        fn upsert_subscription(provisioning::UpsertSubscriptionRequest) -> provisioning::Subscription;
        /// `SyncSubscription`: re-reads the subscription from the marketplace's API (Google
        /// `entitlements.get`) and applies what it says, including approvals the provider owes.
        fn sync_subscription(provisioning::SyncSubscriptionRequest) -> provisioning::Subscription;
        /// `GetSubscription`: returns one subscription by id or marketplace identity.
        fn get_subscription(provisioning::GetSubscriptionRequest) -> provisioning::Subscription;
        /// `ListSubscriptions`: lists subscriptions of an account or in a state.
        fn list_subscriptions(provisioning::ListSubscriptionsRequest) -> provisioning::ListSubscriptionsResponse;
        /// `ApproveSubscription`: approves a REQUESTED subscription with the marketplace.
        fn approve_subscription(provisioning::ApproveSubscriptionRequest) -> provisioning::Subscription;
        /// `RejectSubscription`: rejects a REQUESTED subscription with the marketplace, with a
        /// reason.
        fn reject_subscription(provisioning::RejectSubscriptionRequest) -> provisioning::Subscription;
        /// `ApprovePlanChange`: approves the plan change the customer asked for (Google
        /// `approvePlanChange`); the new plan applies when the marketplace says so.
        fn approve_plan_change(provisioning::ApprovePlanChangeRequest) -> provisioning::Subscription;
        /// `RejectPlanChange`: rejects the plan change the customer asked for.
        fn reject_plan_change(provisioning::RejectPlanChangeRequest) -> provisioning::Subscription;
        /// `ChangePlan`: switches a subscription to another plan at once (Vercel plan changes).
        fn change_plan(provisioning::ChangePlanRequest) -> provisioning::Subscription;
        /// `CancelSubscription`: cancels a subscription; its resources are deprovisioned.
        fn cancel_subscription(provisioning::CancelSubscriptionRequest) -> provisioning::Subscription;
        /// `NotifyAccountApproved`: tells provisioning an account finished signup: every
        /// subscription waiting for it is approved with the marketplace, in order.
        fn notify_account_approved(provisioning::NotifyAccountApprovedRequest) -> provisioning::NotifyAccountApprovedResponse;
        /// `CreateResource`: creates a resource for an account on a product and plan.
        fn create_resource(provisioning::CreateResourceRequest) -> provisioning::CreateResourceResponse;
        /// `GetResource`: returns one resource (without secrets).
        fn get_resource(provisioning::GetResourceRequest) -> provisioning::Resource;
        /// `ListResources`: lists resources of an account.
        fn list_resources(provisioning::ListResourcesRequest) -> provisioning::ListResourcesResponse;
        /// `UpdateResource`: updates a resource's name, metadata, plan or status.
        fn update_resource(provisioning::UpdateResourceRequest) -> provisioning::Resource;
        /// `DeleteResource`: deletes a resource: it becomes UNINSTALLED at once and its driver
        /// tears it down in the background.
        fn delete_resource(provisioning::DeleteResourceRequest) -> provisioning::Resource;
        /// `RotateSecrets`: issues new secrets for a resource.
        fn rotate_secrets(provisioning::RotateSecretsRequest) -> provisioning::RotateSecretsResponse;
        /// `GetResourceSecrets`: returns the current secrets of a resource.
        fn get_resource_secrets(provisioning::GetResourceSecretsRequest) -> provisioning::GetResourceSecretsResponse;
        /// `SuspendResource`: suspends a resource (unpaid invoices, cancelled entitlement): access
        /// is refused, data is kept.
        fn suspend_resource(provisioning::SuspendResourceRequest) -> provisioning::Resource;
        /// `ResumeResource`: resumes a suspended resource.
        fn resume_resource(provisioning::ResumeResourceRequest) -> provisioning::Resource;
        /// `DeleteAccountResources`: deletes every resource of an account (uninstall with cascade).
        fn delete_account_resources(provisioning::DeleteAccountResourcesRequest) -> provisioning::DeleteAccountResourcesResponse;
        /// `RecordProjectConnection`: records that a resource was connected to or disconnected from
        /// a customer project (Vercel `integration-resource.project-connected`).
        fn record_project_connection(provisioning::RecordProjectConnectionRequest) -> provisioning::Resource;
        /// `CheckEntitlement`: what may this customer use right now? Answers from the stored state
        /// only, fast, for internal teams to call on their hot path.
        fn check_entitlement(provisioning::CheckEntitlementRequest) -> provisioning::CheckEntitlementResponse;
        /// `CreateTransferClaim`: offers resources of one account to be claimed by another account
        /// of the same marketplace until the claim expires (Vercel claim deployments).
        fn create_transfer_claim(provisioning::CreateTransferClaimRequest) -> provisioning::TransferClaim;
        /// `VerifyTransferClaim`: tells whether an account may accept a claim now, changing
        /// nothing.
        fn verify_transfer_claim(provisioning::VerifyTransferClaimRequest) -> provisioning::VerifyTransferClaimResponse;
        /// `AcceptTransferClaim`: moves the claimed resources, with their subscriptions and
        /// billing, to the target account.
        fn accept_transfer_claim(provisioning::AcceptTransferClaimRequest) -> provisioning::TransferClaim;
        /// `RunResourceCommand`: runs one command of the resource's console (Vercel's store-details
        /// CLI): `help`, `info`, and whatever the product's driver understands (SQL for the
        /// PostgreSQL driver).
        fn run_resource_command(provisioning::RunResourceCommandRequest) -> provisioning::RunResourceCommandResponse;
        /// `RegisterImportableResource`: registers a resource the provider already runs outside
        /// marketbridge (an existing database) as importable by one account through the
        /// marketplace's import flow (Vercel "Import existing resources").
        fn register_importable_resource(provisioning::RegisterImportableResourceRequest) -> provisioning::ImportableResource;
        /// `ListImportableResources`: what an account may import now: the resources registered for
        /// it and, for plug-in products, those the plug-in lists (`ListImportable`).
        fn list_importable_resources(provisioning::ListImportableResourcesRequest) -> provisioning::ListImportableResourcesResponse;
        /// `ImportResource`: imports one: records it as a LINKED resource (never billed through the
        /// marketplace; detached, not destroyed, when removed), then registers it with the
        /// marketplace (Vercel Import Resource, `ownership: "linked"`, with its secrets) before
        /// answering.
        fn import_resource(provisioning::ImportResourceRequest) -> provisioning::CreateResourceResponse;
        /// `ListOutboxJobs`: operators (admin scope): the outbox's jobs, newest first, with counts
        /// by status.
        fn list_outbox_jobs(common::ListOutboxJobsRequest) -> common::ListOutboxJobsResponse;
        /// `RetryOutboxJob`: operators: runs a dead-lettered or waiting job now, with a fresh
        /// attempt budget.
        fn retry_outbox_job(common::OutboxJobActionRequest) -> common::OutboxJob;
        /// `DiscardOutboxJob`: operators: gives up a job that is not running or done: it is marked
        /// `discarded` and never runs.
        fn discard_outbox_job(common::OutboxJobActionRequest) -> common::OutboxJob;
        /// `ListAuditEntries`: operators: the audit log of operator actions on this service, newest
        /// first.
        fn list_audit_entries(common::ListAuditEntriesRequest) -> common::ListAuditEntriesResponse;
    }
}

service_api! {
    /// The billing service as its callers see it: plain messages in, the
    /// answer or a [`marketbridge_core::Error`] out. [`BillingClient`] calls it
    /// over gRPC; [`InProcess`] calls an implementation in this process.
    pub trait BillingApi: BillingClient, billing::billing_service_server::BillingService, "billing", billing::billing_service_server::SERVICE_NAME {
        /// `ListPlans`: lists the plans a customer may choose, for a product or for an existing
        /// account or resource (plan changes).
        fn list_plans(billing::ListPlansRequest) -> billing::ListPlansResponse;
        /// `GetPlan`: returns one plan of a product.
        fn get_plan(billing::GetPlanRequest) -> billing::Plan;
        /// `RecordSubscriptionChange`: records a subscription's lifecycle change so billing knows
        /// which plan was in force when.
        fn record_subscription_change(billing::RecordSubscriptionChangeRequest) -> billing::RecordSubscriptionChangeResponse;
        /// `RecordUsage`: records usage for customers: one or many events, each with a client event
        /// id that makes a replay a no-op.
        fn record_usage(billing::RecordUsageRequest) -> billing::RecordUsageResponse;
        /// `QueryUsage`: usage totals per hour window and per billing period.
        fn query_usage(billing::QueryUsageRequest) -> billing::QueryUsageResponse;
        /// `ListInvoices`: invoices of an account, newest first.
        fn list_invoices(billing::ListInvoicesRequest) -> billing::ListInvoicesResponse;
        /// `GetInvoice`: one invoice by our id or the marketplace's.
        fn get_invoice(billing::GetInvoiceRequest) -> billing::Invoice;
        /// `RecordInvoiceState`: records an invoice state the marketplace reported (Vercel
        /// `marketplace.invoice.*` webhooks).
        fn record_invoice_state(billing::RecordInvoiceStateRequest) -> billing::Invoice;
        /// `RefundInvoice`: refunds (part of) an invoice through the marketplace.
        fn refund_invoice(billing::RefundInvoiceRequest) -> billing::Invoice;
        /// `ProvisionPrepayment`: credits a prepaid balance from a paid marketplace invoice (Vercel
        /// `billing/provision`).
        fn provision_prepayment(billing::ProvisionPrepaymentRequest) -> billing::Balances;
        /// `GetBalances`: current prepaid balances of an account.
        fn get_balances(billing::GetBalancesRequest) -> billing::Balances;
        /// `CloseAccountBilling`: starts closing an account's billing at uninstall: answers whether
        /// billing is already final, or schedules the final invoices and the finalization.
        fn close_account_billing(billing::CloseAccountBillingRequest) -> billing::CloseAccountBillingResponse;
        /// `ListUsageReports`: the reporting ledger: what was sent to a marketplace, when, and its
        /// answer.
        fn list_usage_reports(billing::ListUsageReportsRequest) -> billing::ListUsageReportsResponse;
        /// `ListOutboxJobs`: operators (admin scope): the outbox's jobs, newest first, with counts
        /// by status.
        fn list_outbox_jobs(common::ListOutboxJobsRequest) -> common::ListOutboxJobsResponse;
        /// `RetryOutboxJob`: operators: runs a dead-lettered or waiting job now, with a fresh
        /// attempt budget.
        fn retry_outbox_job(common::OutboxJobActionRequest) -> common::OutboxJob;
        /// `DiscardOutboxJob`: operators: gives up a job that is not running or done: it is marked
        /// `discarded` and never runs.
        fn discard_outbox_job(common::OutboxJobActionRequest) -> common::OutboxJob;
        /// `ListAuditEntries`: operators: the audit log of operator actions on this service, newest
        /// first.
        fn list_audit_entries(common::ListAuditEntriesRequest) -> common::ListAuditEntriesResponse;
    }
}
