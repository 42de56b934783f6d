//! The Entitlement API's wire shapes (`AWSMPEntitlementService`, JSON 1.1):
//! `GetEntitlements`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `X-Amz-Target` of `GetEntitlements`.
pub const GET_ENTITLEMENTS: &str = "AWSMPEntitlementService.GetEntitlements";
/// Most results per page.
pub const MAX_RESULTS: u32 = 25;

/// Filter names.
pub mod filter {
    /// Legacy customer id.
    pub const CUSTOMER_IDENTIFIER: &str = "CUSTOMER_IDENTIFIER";
    /// Buyer account.
    pub const CUSTOMER_AWS_ACCOUNT_ID: &str = "CUSTOMER_AWS_ACCOUNT_ID";
    /// License.
    pub const LICENSE_ARN: &str = "LICENSE_ARN";
    /// Dimension.
    pub const DIMENSION: &str = "DIMENSION";
}

/// `GetEntitlements` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetEntitlementsRequest {
    /// The product.
    #[serde(default)]
    pub product_code: String,
    /// Filter name → values (OR within a list, AND across names).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub filter: BTreeMap<String, Vec<String>>,
    /// Next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    /// Page size, 1–25.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_results: Option<u32>,
}

/// An entitlement's value: exactly one of the four is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EntitlementValue {
    /// A quantity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integer_value: Option<i64>,
    /// A decimal quantity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub double_value: Option<f64>,
    /// A feature switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boolean_value: Option<bool>,
    /// A text value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_value: Option<String>,
}

impl EntitlementValue {
    /// The value as a whole quantity: integers as they are, decimals
    /// rounded down, `true` as 1; `None` for `false` and text.
    pub fn quantity(&self) -> Option<i64> {
        if let Some(value) = self.integer_value {
            return Some(value);
        }
        if let Some(value) = self.double_value {
            return Some(value.floor() as i64);
        }
        match self.boolean_value {
            Some(true) => Some(1),
            _ => None,
        }
    }

    /// As display text.
    pub fn to_text(&self) -> String {
        if let Some(v) = self.integer_value {
            return v.to_string();
        }
        if let Some(v) = self.double_value {
            return v.to_string();
        }
        if let Some(v) = self.boolean_value {
            return v.to_string();
        }
        self.string_value.clone().unwrap_or_default()
    }
}

/// One entitlement.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Entitlement {
    /// The product.
    #[serde(default)]
    pub product_code: String,
    /// Dimension API name.
    #[serde(default)]
    pub dimension: String,
    /// Legacy customer id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_identifier: Option<String>,
    /// Buyer account.
    #[serde(
        default,
        rename = "CustomerAWSAccountId",
        skip_serializing_if = "Option::is_none"
    )]
    pub customer_aws_account_id: Option<String>,
    /// License.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_arn: Option<String>,
    /// Value.
    #[serde(default)]
    pub value: EntitlementValue,
    /// End of the contract, epoch seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_date: Option<f64>,
}

impl Entitlement {
    /// True while the contract runs at `now` (epoch seconds).
    pub fn is_current(&self, now: i64) -> bool {
        self.expiration_date.is_none_or(|end| end > now as f64)
    }
}

/// `GetEntitlements` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetEntitlementsResponse {
    /// This page.
    #[serde(default)]
    pub entitlements: Vec<Entitlement>,
    /// Present while more pages follow (even after an empty page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}
