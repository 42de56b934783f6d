//! Channels and typed clients to the marketbridge services.

use crate::tls::service_client_tls;
use marketbridge_config::TlsOptions;
use marketbridge_core::{Error, Result};
use marketbridge_proto::account::v1::account_service_client::AccountServiceClient;
use marketbridge_proto::billing::v1::billing_service_client::BillingServiceClient;
use marketbridge_proto::provisioning::v1::provisioning_service_client::ProvisioningServiceClient;
use marketbridge_telemetry::{GrpcClientLayer, GrpcClientService};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tower::Layer;

/// A channel whose calls open client spans and carry the trace context.
pub type TracedChannel = GrpcClientService<Channel>;
/// Client of the account service.
pub type AccountClient = AccountServiceClient<TracedChannel>;
/// Client of the provisioning service.
pub type ProvisioningClient = ProvisioningServiceClient<TracedChannel>;
/// Client of the billing service.
pub type BillingClient = BillingServiceClient<TracedChannel>;

/// A lazily connecting channel to `url` (`http://` or `https://`), where
/// every call has `deadline` to finish.
pub fn channel(url: &str, tls: &TlsOptions, deadline: Duration) -> Result<TracedChannel> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| Error::validation(format!("invalid service URL `{url}`: {e}")))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(deadline)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30));
    if url.starts_with("https://") {
        endpoint = endpoint
            .tls_config(service_client_tls(tls)?)
            .map_err(|e| Error::validation(format!("service client TLS: {e}")))?;
    }
    Ok(GrpcClientLayer.layer(endpoint.connect_lazy()))
}

/// Clients of the three services.
#[derive(Debug, Clone)]
pub struct ServiceClients {
    /// The account service.
    pub account: AccountClient,
    /// The provisioning service.
    pub provisioning: ProvisioningClient,
    /// The billing service.
    pub billing: BillingClient,
    /// Channels by service name, for health checks.
    pub channels: Vec<(&'static str, TracedChannel)>,
}

impl ServiceClients {
    /// Clients of the services at the given URLs.
    pub fn connect(
        account_url: &str,
        provisioning_url: &str,
        billing_url: &str,
        tls: &TlsOptions,
        deadline: Duration,
    ) -> Result<Self> {
        let account = channel(account_url, tls, deadline)?;
        let provisioning = channel(provisioning_url, tls, deadline)?;
        let billing = channel(billing_url, tls, deadline)?;
        Ok(Self {
            account: AccountServiceClient::new(account.clone()),
            provisioning: ProvisioningServiceClient::new(provisioning.clone()),
            billing: BillingServiceClient::new(billing.clone()),
            channels: vec![
                ("account", account),
                ("provisioning", provisioning),
                ("billing", billing),
            ],
        })
    }

    /// Asks every service's gRPC health endpoint; returns the names of those
    /// not SERVING.
    pub async fn unhealthy(&self) -> Vec<&'static str> {
        let mut failing = Vec::new();
        for (name, channel) in &self.channels {
            let mut client = tonic_health::pb::health_client::HealthClient::new(channel.clone());
            let mut request = tonic::Request::new(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            });
            request.set_timeout(Duration::from_secs(1));
            let serving = matches!(
                client.check(request).await.map(|r| r.into_inner().status),
                Ok(status) if status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            );
            if !serving {
                failing.push(*name);
            }
        }
        failing
    }
}
