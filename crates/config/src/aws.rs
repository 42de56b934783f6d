//! AWS Marketplace settings.

use serde::{Deserialize, Serialize};

/// How the AWS listing is priced (one product code, one pricing model).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AwsProductType {
    /// Pay as you go: no entitlements; license events say whether the buyer
    /// is subscribed, and all usage is metered.
    Subscription,
    /// Quantities bought up front (`GetEntitlements`); nothing is metered.
    Contract,
    /// A contract plus metered usage beyond it.
    #[default]
    ContractWithConsumption,
}

impl AwsProductType {
    /// True when the license's state is read from its entitlements.
    pub fn has_entitlements(self) -> bool {
        !matches!(self, Self::Subscription)
    }

    /// True when usage is sent to `BatchMeterUsage`.
    pub fn meters_usage(self) -> bool {
        !matches!(self, Self::Contract)
    }
}

/// AWS Marketplace SaaS settings. Empty `product_code` leaves AWS off.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AwsOptions {
    /// The product code AWS assigned to the SaaS product; empty leaves AWS
    /// Marketplace off.
    pub product_code: String,
    /// The listing's pricing model: `subscription` (pay as you go),
    /// `contract` or `contract_with_consumption`.
    pub product_type: AwsProductType,
    /// Subscription products: the catalog plan a subscribed license is on
    /// (`plan id`); empty for the first plan with an AWS id.
    pub subscription_plan: String,
    /// Subscription products: minutes after `License Deprovisioned` (or
    /// `unsubscribe-pending`) at which the license counts as inactive
    /// (AWS's final metering window, about an hour; unverified).
    pub deprovisioning_window_minutes: u64,
    /// The region `ResolveCustomer` and `BatchMeterUsage` are called in
    /// (every license is metered from this one region).
    pub region: String,
    /// Metering API endpoint; empty for
    /// `https://metering.marketplace.{region}.amazonaws.com/`.
    pub metering_url: String,
    /// Entitlement API endpoint; empty for
    /// `https://entitlement.marketplace.us-east-1.amazonaws.com/`.
    pub entitlement_url: String,
    /// Access key of the seller account; empty to use `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// Secret key; with an empty `access_key_id`, `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
    /// Session token of temporary credentials; with an empty
    /// `access_key_id`, `AWS_SESSION_TOKEN`.
    pub session_token: String,
    /// Path of the fulfillment URL (the registration POST and the signup
    /// page).
    pub fulfillment_path: String,
    /// Path of the EventBridge API destination.
    pub events_path: String,
    /// Path of the SNS HTTPS subscription endpoint (legacy listings).
    pub sns_path: String,
    /// Header carrying the EventBridge connection's API key.
    pub event_key_header: String,
    /// The API key the EventBridge connection sends; empty refuses every
    /// EventBridge delivery.
    pub event_key: String,
    /// SNS topic ARNs whose messages are accepted (legacy listings),
    /// comma-separated; empty refuses every SNS delivery.
    pub sns_topic_arns: String,
    /// The only URLs SNS signing certificates are fetched from (`*` is one
    /// DNS label in the host, anything in the path).
    pub sns_certificate_url_pattern: String,
    /// Usage older than this many hours at sending is not sent (AWS refuses
    /// records 6 hours or more in the past).
    pub metering_window_hours: u64,
    /// Also send the previous month's usage until 06:00 UTC on the 1st
    /// (AWS month-end grace; unverified, off by default).
    pub month_end_grace: bool,
    /// Seconds between re-reads of every license's entitlements.
    pub reconcile_interval_seconds: u64,
}

impl Default for AwsOptions {
    fn default() -> Self {
        Self {
            product_code: String::new(),
            product_type: AwsProductType::default(),
            subscription_plan: String::new(),
            deprovisioning_window_minutes: 60,
            region: "us-east-1".into(),
            metering_url: String::new(),
            entitlement_url: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            session_token: String::new(),
            fulfillment_path: "/aws/fulfillment".into(),
            events_path: "/aws/events".into(),
            sns_path: "/aws/sns".into(),
            event_key_header: "x-marketbridge-key".into(),
            event_key: String::new(),
            sns_topic_arns: String::new(),
            sns_certificate_url_pattern: "https://sns.*.amazonaws.com/*.pem".into(),
            metering_window_hours: 6,
            month_end_grace: false,
            reconcile_interval_seconds: 3600,
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use crate::Config;

    #[test]
    fn the_product_type_is_read_from_the_environment_and_checked() {
        figment::Jail::expect_with(|jail| {
            assert_eq!(
                Config::load(None).expect("loads").aws.product_type,
                AwsProductType::ContractWithConsumption
            );
            jail.set_env("MARKETBRIDGE_AWS__PRODUCT_TYPE", "subscription");
            jail.set_env("MARKETBRIDGE_AWS__DEPROVISIONING_WINDOW_MINUTES", "90");
            let config = Config::load(None).expect("loads");
            assert_eq!(config.aws.product_type, AwsProductType::Subscription);
            assert!(!config.aws.product_type.has_entitlements());
            assert_eq!(config.aws.deprovisioning_window_minutes, 90);
            jail.set_env("MARKETBRIDGE_AWS__PRODUCT_TYPE", "contract");
            let config = Config::load(None).expect("loads");
            assert!(!config.aws.product_type.meters_usage());
            jail.set_env("MARKETBRIDGE_AWS__PRODUCT_TYPE", "free_for_all");
            assert!(Config::load(None).is_err(), "an unknown product type");
            Ok(())
        });
    }
}
