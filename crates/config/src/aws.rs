//! AWS Marketplace settings.

use serde::{Deserialize, Serialize};

/// AWS Marketplace SaaS settings. Empty `product_code` leaves AWS off.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AwsOptions {
    /// The product code AWS assigned to the SaaS product; empty leaves AWS
    /// Marketplace off.
    pub product_code: String,
}

impl Default for AwsOptions {
    fn default() -> Self {
        Self {
            product_code: String::new(),
        }
    }
}
