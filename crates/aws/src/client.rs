//! The signed JSON 1.1 client of the Metering and Entitlement APIs.

use crate::entitlement::{
    self, Entitlement, GetEntitlementsRequest, GetEntitlementsResponse, filter,
};
use crate::error::{CallError, error_name};
use crate::metering::{
    self, BatchMeterUsageRequest, BatchMeterUsageResponse, Licensee, ResolveCustomerRequest,
    ResolveCustomerResponse,
};
use crate::{AwsCredentials, JSON_1_1, SIGNING_SERVICE, sigv4};
use marketbridge_config::{AwsOptions, AwsProductType};
use marketbridge_core::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// Time limit of one call to AWS.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// The commercial partition serves the Entitlement API in us-east-1 only.
pub const ENTITLEMENT_REGION: &str = "us-east-1";
/// Pages read at most per `GetEntitlements` listing.
const MAX_PAGES: usize = 200;

/// The Metering endpoint of a region.
pub fn metering_url(region: &str) -> String {
    format!("https://metering.marketplace.{region}.amazonaws.com/")
}

/// The Entitlement endpoint.
pub fn entitlement_url() -> String {
    format!("https://entitlement.marketplace.{ENTITLEMENT_REGION}.amazonaws.com/")
}

/// Calls AWS Marketplace for one product with the seller's credentials.
#[derive(Clone)]
pub struct MarketplaceClient {
    http: reqwest::Client,
    credentials: AwsCredentials,
    product_code: String,
    region: String,
    metering_url: String,
    entitlement_url: String,
    product_type: AwsProductType,
}

impl std::fmt::Debug for MarketplaceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarketplaceClient")
            .field("product_code", &self.product_code)
            .field("region", &self.region)
            .field("metering_url", &self.metering_url)
            .finish_non_exhaustive()
    }
}

fn with_slash(url: &str) -> String {
    let url = url.trim();
    if url.ends_with('/') {
        url.to_owned()
    } else {
        format!("{url}/")
    }
}

impl MarketplaceClient {
    /// A client over `http`.
    pub fn new(
        http: reqwest::Client,
        credentials: AwsCredentials,
        product_code: &str,
        region: &str,
        metering_url: &str,
        entitlement_url: &str,
    ) -> Self {
        let region = if region.trim().is_empty() {
            "us-east-1".to_owned()
        } else {
            region.trim().to_owned()
        };
        Self {
            http,
            credentials,
            product_code: product_code.trim().to_owned(),
            metering_url: if metering_url.trim().is_empty() {
                self::metering_url(&region)
            } else {
                with_slash(metering_url)
            },
            entitlement_url: if entitlement_url.trim().is_empty() {
                self::entitlement_url()
            } else {
                with_slash(entitlement_url)
            },
            region,
            product_type: AwsProductType::default(),
        }
    }

    /// The client as configured; `Ok(None)` when AWS is off
    /// (`aws.product_code` is empty).
    pub fn from_options(
        options: &AwsOptions,
        tls: &marketbridge_config::TlsOptions,
    ) -> Result<Option<Self>> {
        if options.product_code.trim().is_empty() {
            return Ok(None);
        }
        let credentials = AwsCredentials::from_options(options)?;
        let http = marketbridge_rpc::http::outbound_client(tls, CALL_TIMEOUT)?;
        Ok(Some(
            Self::new(
                http,
                credentials,
                &options.product_code,
                &options.region,
                &options.metering_url,
                &options.entitlement_url,
            )
            .with_product_type(options.product_type),
        ))
    }

    /// The same client for a listing priced as `product_type`.
    pub fn with_product_type(mut self, product_type: AwsProductType) -> Self {
        self.product_type = product_type;
        self
    }

    /// How the listing is priced.
    pub fn product_type(&self) -> AwsProductType {
        self.product_type
    }

    /// The product code.
    pub fn product_code(&self) -> &str {
        &self.product_code
    }

    /// The metering region.
    pub fn region(&self) -> &str {
        &self.region
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        url: &str,
        region: &str,
        target: &str,
        request: &Req,
    ) -> std::result::Result<Resp, CallError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| CallError::Transport(format!("request body: {e}")))?;
        let parsed =
            url::Url::parse(url).map_err(|e| CallError::Transport(format!("{url}: {e}")))?;
        let host = match (parsed.host_str(), parsed.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            _ => return Err(CallError::Transport(format!("{url} names no host"))),
        };
        let base = [
            ("content-type", JSON_1_1),
            ("x-amz-target", target),
            ("host", host.as_str()),
        ];
        let signed = sigv4::sign_headers(
            &self.credentials,
            region,
            SIGNING_SERVICE,
            SystemTime::now(),
            url,
            &base,
            &body,
        )
        .map_err(CallError::Transport)?;
        let mut builder = self
            .http
            .post(url)
            .header("content-type", JSON_1_1)
            .header("x-amz-target", target);
        for (name, value) in &signed {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let response = builder
            .body(body)
            .send()
            .await
            .map_err(|e| CallError::Transport(format!("{target}: {e}")))?;
        let status = response.status().as_u16();
        let request_id = response
            .headers()
            .get("x-amzn-requestid")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let header_type = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response
            .text()
            .await
            .map_err(|e| CallError::Transport(format!("{target}: {e}")))?;
        if (200..300).contains(&status) {
            return serde_json::from_str(&text)
                .map_err(|e| CallError::Transport(format!("{target}: unreadable answer ({e})")));
        }
        let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let raw_type = value
            .get("__type")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .or(header_type)
            .unwrap_or_else(|| format!("Http{status}"));
        let message = value
            .get("message")
            .or_else(|| value.get("Message"))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let error = CallError::Service {
            status,
            name: error_name(&raw_type),
            message,
            request_id,
        };
        tracing::info!(aws.target = target, aws.request_id = %error_request_id(&error), error = %error, "aws refused a call");
        Err(error)
    }

    /// `ResolveCustomer`: what a registration token stands for. The token is
    /// never logged.
    pub async fn resolve_customer(
        &self,
        token: &str,
    ) -> std::result::Result<ResolveCustomerResponse, CallError> {
        self.call(
            &self.metering_url,
            &self.region,
            metering::RESOLVE_CUSTOMER,
            &ResolveCustomerRequest {
                registration_token: token.to_owned(),
            },
        )
        .await
    }

    /// `BatchMeterUsage` of one request.
    pub async fn batch_meter_usage(
        &self,
        request: &BatchMeterUsageRequest,
    ) -> std::result::Result<BatchMeterUsageResponse, CallError> {
        self.call(
            &self.metering_url,
            &self.region,
            metering::BATCH_METER_USAGE,
            request,
        )
        .await
    }

    /// One `GetEntitlements` page.
    pub async fn get_entitlements_page(
        &self,
        request: &GetEntitlementsRequest,
    ) -> std::result::Result<GetEntitlementsResponse, CallError> {
        self.call(
            &self.entitlement_url,
            ENTITLEMENT_REGION,
            entitlement::GET_ENTITLEMENTS,
            request,
        )
        .await
    }

    /// Every entitlement of a licensee (by `LICENSE_ARN`, or by
    /// `CUSTOMER_IDENTIFIER` for legacy buyers), all pages; empty pages
    /// that still carry a token are followed.
    pub async fn entitlements_of(&self, licensee: &Licensee) -> Result<Vec<Entitlement>> {
        let mut filters = BTreeMap::new();
        match licensee {
            Licensee::License { license_arn, .. } => {
                filters.insert(filter::LICENSE_ARN.to_owned(), vec![license_arn.clone()]);
            }
            Licensee::Legacy {
                customer_identifier,
            } => {
                filters.insert(
                    filter::CUSTOMER_IDENTIFIER.to_owned(),
                    vec![customer_identifier.clone()],
                );
            }
        }
        self.list_entitlements(filters).await
    }

    /// Every entitlement of the product (reconciliation).
    pub async fn all_entitlements(&self) -> Result<Vec<Entitlement>> {
        self.list_entitlements(BTreeMap::new()).await
    }

    async fn list_entitlements(
        &self,
        filter: BTreeMap<String, Vec<String>>,
    ) -> Result<Vec<Entitlement>> {
        let mut all = Vec::new();
        let mut next_token = None;
        for _ in 0..MAX_PAGES {
            let page = self
                .get_entitlements_page(&GetEntitlementsRequest {
                    product_code: self.product_code.clone(),
                    filter: filter.clone(),
                    next_token: next_token.take(),
                    max_results: Some(entitlement::MAX_RESULTS),
                })
                .await?;
            all.extend(page.entitlements);
            match page.next_token.filter(|t| !t.is_empty()) {
                Some(token) => next_token = Some(token),
                None => return Ok(all),
            }
        }
        Err(Error::unavailable(
            "GetEntitlements kept answering with more pages",
        ))
    }
}

fn error_request_id(error: &CallError) -> &str {
    match error {
        CallError::Service { request_id, .. } => request_id,
        CallError::Transport(_) => "",
    }
}
