//! Channels and typed clients to the marketbridge services.

use crate::tls::service_client_tls;
use marketbridge_config::{Config, TlsOptions};
use marketbridge_core::crypto::SecretString;
use marketbridge_core::{Error, Result};
use marketbridge_proto::account::v1::account_service_client::AccountServiceClient;
use marketbridge_proto::billing::v1::billing_service_client::BillingServiceClient;
use marketbridge_proto::provisioning::v1::provisioning_service_client::ProvisioningServiceClient;
use marketbridge_telemetry::{GrpcClientLayer, GrpcClientService};
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tower::{Layer, Service};

/// A channel whose calls open client spans, carry the trace context and the
/// caller's credentials.
pub type TracedChannel = GrpcClientService<Authorized<Channel>>;
/// Client of the account service.
pub type AccountClient = AccountServiceClient<TracedChannel>;
/// Client of the provisioning service.
pub type ProvisioningClient = ProvisioningServiceClient<TracedChannel>;
/// Client of the billing service.
pub type BillingClient = BillingServiceClient<TracedChannel>;

/// How a client proves who it is to a service: TLS (with a client
/// certificate for mTLS) and a bearer token.
#[derive(Clone, Default)]
pub struct ClientCredentials {
    /// TLS settings (`client_ca`, `client_cert`, `client_key`).
    pub tls: TlsOptions,
    /// The bearer token sent as `authorization`, if any.
    pub token: Option<SecretString>,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl ClientCredentials {
    /// The credentials of the set's own parts: the configured TLS and
    /// `security.service_token`.
    pub fn of_set(config: &Config) -> Self {
        let token = config.security.service_token.trim();
        Self {
            tls: config.tls.clone(),
            token: (!token.is_empty()).then(|| SecretString::new(token)),
        }
    }

    /// TLS only, no token (calls to servers that are not ours).
    pub fn tls_only(tls: &TlsOptions) -> Self {
        Self {
            tls: tls.clone(),
            token: None,
        }
    }
}

/// Adds the caller's bearer token to every request.
#[derive(Debug, Clone)]
pub struct Authorized<S> {
    inner: S,
    header: Option<http::HeaderValue>,
}

impl<S, B> Service<http::Request<B>> for Authorized<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        marketbridge_telemetry::transactions::check_no_open_transaction(request.uri().path());
        // A call made on behalf of someone else (the console's operator)
        // carries its own credential.
        if let Some(header) = &self.header
            && !request.headers().contains_key(http::header::AUTHORIZATION)
        {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, header.clone());
        }
        self.inner.call(request)
    }
}

/// A lazily connecting channel to `url` (`http://` or `https://`), where
/// every call has `deadline` to finish and carries `credentials`.
pub fn channel(
    url: &str,
    credentials: &ClientCredentials,
    deadline: Duration,
) -> Result<TracedChannel> {
    let tls = &credentials.tls;
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
    let header = match &credentials.token {
        Some(token) => {
            let mut value = http::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .map_err(|_| Error::validation("the service token must be visible ASCII"))?;
            value.set_sensitive(true);
            Some(value)
        }
        None => None,
    };
    Ok(GrpcClientLayer.layer(Authorized {
        inner: endpoint.connect_lazy(),
        header,
    }))
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
        credentials: &ClientCredentials,
        deadline: Duration,
    ) -> Result<Self> {
        let account = channel(account_url, credentials, deadline)?;
        let provisioning = channel(provisioning_url, credentials, deadline)?;
        let billing = channel(billing_url, credentials, deadline)?;
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
