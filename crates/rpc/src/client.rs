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
        Ok(Self {
            account: AccountServiceClient::new(channel(account_url, tls, deadline)?),
            provisioning: ProvisioningServiceClient::new(channel(provisioning_url, tls, deadline)?),
            billing: BillingServiceClient::new(channel(billing_url, tls, deadline)?),
        })
    }
}
