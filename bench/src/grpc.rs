//! gRPC clients of the services, as an outside caller holds them: a plain
//! tonic channel per connection and a bearer token from
//! `security.grpc_clients`.

use marketbridge_proto::account::v1::account_service_client::AccountServiceClient;
use marketbridge_proto::billing::v1::billing_service_client::BillingServiceClient;
use marketbridge_proto::common::v1 as common_pb;
use marketbridge_proto::provisioning::v1::provisioning_service_client::ProvisioningServiceClient;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Adds `authorization: Bearer …` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A channel with the caller's token.
pub type Authorized = InterceptedService<Channel, Bearer>;
/// The account service.
pub type AccountClient = AccountServiceClient<Authorized>;
/// The provisioning service.
pub type ProvisioningClient = ProvisioningServiceClient<Authorized>;
/// The billing service.
pub type BillingClient = BillingServiceClient<Authorized>;

/// Where the services listen and the token to call them with.
#[derive(Clone)]
pub struct Services {
    /// `http://127.0.0.1:port` of the account service.
    pub account_url: String,
    /// Of the provisioning service.
    pub provisioning_url: String,
    /// Of the billing service.
    pub billing_url: String,
    bearer: Bearer,
}

impl Services {
    /// The services at these URLs, called with `token`.
    pub fn new(
        account_url: String,
        provisioning_url: String,
        billing_url: String,
        token: &str,
    ) -> Result<Self, String> {
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| "the gRPC token must be visible ASCII".to_owned())?;
        Ok(Self {
            account_url,
            provisioning_url,
            billing_url,
            bearer: Bearer(bearer),
        })
    }

    fn channel(&self, url: &str) -> Result<Authorized, String> {
        let channel = Endpoint::from_shared(url.to_owned())
            .map_err(|e| format!("{url}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(InterceptedService::new(channel, self.bearer.clone()))
    }

    /// A new connection to the account service.
    pub fn account(&self) -> Result<AccountClient, String> {
        Ok(AccountServiceClient::new(self.channel(&self.account_url)?))
    }

    /// A new connection to the provisioning service.
    pub fn provisioning(&self) -> Result<ProvisioningClient, String> {
        Ok(ProvisioningServiceClient::new(
            self.channel(&self.provisioning_url)?,
        ))
    }

    /// A new connection to the billing service.
    pub fn billing(&self) -> Result<BillingClient, String> {
        Ok(BillingServiceClient::new(self.channel(&self.billing_url)?))
    }

    /// A new connection to the billing service for `ListPlans` alone,
    /// reading answers as [`PlanListing`].
    pub fn plan_lister(&self) -> Result<PlanLister, String> {
        Ok(PlanLister(tonic::client::Grpc::new(
            self.channel(&self.billing_url)?,
        )))
    }
}

/// `ListPlansResponse` as a load generator reads it: each plan left encoded
/// (field 1, `repeated Plan plans`), so the generator checks that plans came
/// without spending the machine's CPU on decoding them, as an HTTP load
/// generator does not parse the JSON it gets.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PlanListing {
    /// The encoded plans.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub plans: Vec<Vec<u8>>,
}

/// `BillingService.ListPlans` over one connection, answers read as
/// [`PlanListing`].
#[derive(Clone)]
pub struct PlanLister(tonic::client::Grpc<Authorized>);

impl PlanLister {
    /// One call.
    pub async fn list_plans(
        &mut self,
        request: marketbridge_proto::billing::v1::ListPlansRequest,
    ) -> Result<PlanListing, tonic::Status> {
        self.0
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<
            marketbridge_proto::billing::v1::ListPlansRequest,
            PlanListing,
        >::default();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/marketbridge.billing.v1.BillingService/ListPlans",
        );
        Ok(self
            .0
            .unary(tonic::Request::new(request), path, codec)
            .await?
            .into_inner())
    }
}

/// Jobs of the three outboxes by status, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxTotals {
    /// Due or waiting for a retry, or running: not finished.
    pub unfinished: u64,
    /// Finished.
    pub done: u64,
    /// Dead-lettered.
    pub dead: u64,
}

/// Asks each service's `ListOutboxJobs` (admin scope) for its counts.
pub struct OutboxWatch {
    account: AccountClient,
    provisioning: ProvisioningClient,
    billing: BillingClient,
}

impl OutboxWatch {
    /// A watch over its own connections.
    pub fn new(services: &Services) -> Result<Self, String> {
        Ok(Self {
            account: services.account()?,
            provisioning: services.provisioning()?,
            billing: services.billing()?,
        })
    }

    /// The counts now: of every job, or with `unfinished_only` only of the
    /// jobs not finished (`done` is then 0). The full count reads every job
    /// ever finished, so a watch during a measurement asks for the other.
    pub async fn totals(&mut self, unfinished_only: bool) -> Result<OutboxTotals, String> {
        let request = || common_pb::ListOutboxJobsRequest {
            status: "running".into(),
            page: Some(common_pb::PageRequest {
                page_size: 1,
                page_token: String::new(),
            }),
            unfinished_counts_only: unfinished_only,
            ..Default::default()
        };
        let counts = [
            self.account
                .list_outbox_jobs(request())
                .await
                .map_err(|e| format!("account ListOutboxJobs: {e}"))?,
            self.provisioning
                .list_outbox_jobs(request())
                .await
                .map_err(|e| format!("provisioning ListOutboxJobs: {e}"))?,
            self.billing
                .list_outbox_jobs(request())
                .await
                .map_err(|e| format!("billing ListOutboxJobs: {e}"))?,
        ];
        let mut totals = OutboxTotals::default();
        for answer in counts {
            let counts = answer.into_inner().counts.unwrap_or_default();
            totals.unfinished += counts.pending + counts.retrying + counts.running;
            totals.done += counts.done;
            totals.dead += counts.dead;
        }
        Ok(totals)
    }

    /// Polls until no job is unfinished (or `timeout`), first after 5 ms,
    /// then twice as long each time up to `max_interval`: few polls (each
    /// costs the services a count of their unfinished jobs) while the wait
    /// is still timed to within `max_interval`. Returns how many polls it
    /// took.
    pub async fn wait_empty(
        &mut self,
        max_interval: Duration,
        timeout: Duration,
    ) -> Result<u32, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut interval = Duration::from_millis(5).min(max_interval);
        let mut polls = 0;
        loop {
            let totals = self.totals(true).await?;
            polls += 1;
            if totals.unfinished == 0 {
                return Ok(polls);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "the outboxes still hold {} unfinished jobs after {} s",
                    totals.unfinished,
                    timeout.as_secs()
                ));
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(max_interval);
        }
    }
}
