//! What the AWS routes need, built once from configuration.

use marketbridge_aws::sns::{CertificatePolicy, SnsVerifier};
use marketbridge_config::Config;
use marketbridge_core::crypto::SecretString;
use marketbridge_core::{Error, Result};
use std::sync::Arc;
use std::time::Duration;

/// The configured AWS adapter.
pub struct AwsAdapter {
    /// The fulfillment URL's path.
    pub fulfillment_path: String,
    /// The EventBridge API destination's path.
    pub events_path: String,
    /// The SNS endpoint's path.
    pub sns_path: String,
    /// The header carrying the EventBridge API key.
    pub event_key_header: String,
    /// The EventBridge API key; `None` refuses EventBridge.
    pub event_key: Option<SecretString>,
    /// Accepted SNS topics.
    pub topics: Vec<String>,
    /// Where SNS certificates may come from.
    pub certificates: CertificatePolicy,
    /// SNS signature verification.
    pub verifier: SnsVerifier,
    /// Visits `SubscribeURL`s.
    pub http: reqwest::Client,
}

/// The AWS adapter, when configured.
#[derive(Clone, Default)]
pub struct AwsState {
    adapter: Option<Arc<AwsAdapter>>,
}

fn path(text: &str, default: &str) -> String {
    let text = text.trim().trim_end_matches('/');
    if text.is_empty() {
        default.to_owned()
    } else if text.starts_with('/') {
        text.to_owned()
    } else {
        format!("/{text}")
    }
}

impl AwsState {
    /// Built from `config.aws`; empty when `aws.product_code` is.
    pub fn new(config: &Config) -> Result<Self> {
        let aws = &config.aws;
        if aws.product_code.trim().is_empty() {
            return Ok(Self::default());
        }
        let certificates =
            CertificatePolicy::parse(&aws.sns_certificate_url_pattern).ok_or_else(|| {
                Error::invalid_field(
                    "aws.sns_certificate_url_pattern",
                    "is not a scheme://host[:port]/path pattern",
                )
            })?;
        let http = marketbridge_rpc::http::outbound_client(&config.tls, Duration::from_secs(10))?;
        let event_key = Some(aws.event_key.trim())
            .filter(|k| !k.is_empty())
            .map(SecretString::new);
        Ok(Self {
            adapter: Some(Arc::new(AwsAdapter {
                fulfillment_path: path(&aws.fulfillment_path, "/aws/fulfillment"),
                events_path: path(&aws.events_path, "/aws/events"),
                sns_path: path(&aws.sns_path, "/aws/sns"),
                event_key_header: aws.event_key_header.trim().to_ascii_lowercase(),
                event_key,
                topics: aws
                    .sns_topic_arns
                    .split(',')
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .collect(),
                verifier: SnsVerifier::new(http.clone(), certificates.clone()),
                certificates,
                http,
            })),
        })
    }

    /// The adapter, when AWS is configured.
    pub fn adapter(&self) -> Option<&AwsAdapter> {
        self.adapter.as_deref()
    }
}
