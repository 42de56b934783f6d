//! EventBridge events of AWS Marketplace (`source: aws.agreement-marketplace`)
//! and legacy SNS notification messages, in one shape the services act on.
//! Events are hints: whoever receives one re-reads the state at AWS.

use serde::{Deserialize, Serialize};

/// The `source` of Marketplace events.
pub const SOURCE: &str = "aws.agreement-marketplace";

/// `detail-type`s (the role suffix ` - Manufacturer` / ` - Proposer` is
/// matched separately).
pub mod detail_type {
    /// A license's entitlements changed (incl. the first grant).
    pub const LICENSE_UPDATED: &str = "License Updated";
    /// A license's entitlements were revoked.
    pub const LICENSE_DEPROVISIONED: &str = "License Deprovisioned";
    /// An agreement was created.
    pub const AGREEMENT_CREATED: &str = "Purchase Agreement Created";
    /// An agreement changed.
    pub const AGREEMENT_AMENDED: &str = "Purchase Agreement Amended";
    /// An agreement ended.
    pub const AGREEMENT_ENDED: &str = "Purchase Agreement Ended";
}

/// Legacy SNS `action`s.
pub mod action {
    /// Subscription active.
    pub const SUBSCRIBE_SUCCESS: &str = "subscribe-success";
    /// Subscription failed.
    pub const SUBSCRIBE_FAIL: &str = "subscribe-fail";
    /// Buyer cancelled; final metering window open.
    pub const UNSUBSCRIBE_PENDING: &str = "unsubscribe-pending";
    /// Subscription ended.
    pub const UNSUBSCRIBE_SUCCESS: &str = "unsubscribe-success";
    /// Contract entitlements changed.
    pub const ENTITLEMENT_UPDATED: &str = "entitlement-updated";
}

/// An id object (`{"id": ...}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Id {
    /// The id.
    #[serde(default)]
    pub id: String,
}

/// `detail.agreement`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agreement {
    /// `agmt-…`.
    #[serde(default)]
    pub id: String,
    /// `NEW`, `RENEW`, `REPLACE`, `AMEND`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    /// Status (`ACTIVE`, `CANCELLED`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The agreement renewed or replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_agreement_id: Option<String>,
}

/// `detail.product`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Product code (license events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Product id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `detail.license`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct License {
    /// The license (sometimes without the `arn:` prefix).
    #[serde(default)]
    pub arn: String,
}

/// `detail.acceptor`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    /// The buyer's account.
    #[serde(default)]
    pub account_id: String,
}

/// The parts of `detail` marketbridge reads; everything else is ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detail {
    /// The agreement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<Agreement>,
    /// The product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<Product>,
    /// The license (license events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<License>,
    /// The buyer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acceptor: Option<Account>,
    /// The offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<Id>,
}

/// An EventBridge envelope.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Always `0`.
    #[serde(default)]
    pub version: String,
    /// Unique per event; the deduplication key.
    #[serde(default)]
    pub id: String,
    /// What happened.
    #[serde(default, rename = "detail-type")]
    pub detail_type: String,
    /// `aws.agreement-marketplace`.
    #[serde(default)]
    pub source: String,
    /// The seller account.
    #[serde(default)]
    pub account: String,
    /// When (RFC 3339).
    #[serde(default)]
    pub time: String,
    /// Region.
    #[serde(default)]
    pub region: String,
    /// The detail, kept whole.
    #[serde(default)]
    pub detail: serde_json::Value,
}

impl Envelope {
    /// Reads an event body leniently; `None` when it is not an EventBridge
    /// event of AWS Marketplace.
    pub fn parse(body: &[u8]) -> Option<Self> {
        let envelope: Envelope = serde_json::from_slice(body).ok()?;
        (envelope.source == SOURCE && !envelope.id.trim().is_empty()).then_some(envelope)
    }

    /// The `detail-type` without its role suffix.
    pub fn kind(&self) -> &str {
        self.detail_type
            .rsplit_once(" - ")
            .map_or(self.detail_type.as_str(), |(kind, _)| kind)
            .trim()
    }

    /// The detail's parts marketbridge reads.
    pub fn detail(&self) -> Detail {
        serde_json::from_value(self.detail.clone()).unwrap_or_default()
    }
}

/// The payload of a legacy SNS notification (`Message`, itself JSON text).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyMessage {
    /// [`action`].
    #[serde(default)]
    pub action: String,
    /// The customer.
    #[serde(default, rename = "customer-identifier")]
    pub customer_identifier: String,
    /// The product.
    #[serde(default, rename = "product-code")]
    pub product_code: String,
    /// The offer.
    #[serde(
        default,
        rename = "offer-identifier",
        skip_serializing_if = "Option::is_none"
    )]
    pub offer_identifier: Option<String>,
    /// `"true"`/`"false"` (a string on the wire).
    #[serde(
        default,
        rename = "isFreeTrialTermPresent",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_bool"
    )]
    pub free_trial: Option<bool>,
}

fn lenient_bool<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<bool>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(deserializer)?;
    Ok(match value {
        Some(serde_json::Value::Bool(b)) => Some(b),
        Some(serde_json::Value::String(s)) => Some(s.trim().eq_ignore_ascii_case("true")),
        _ => None,
    })
}

impl LegacyMessage {
    /// Reads the `Message` text.
    pub fn parse(message: &str) -> Option<Self> {
        let parsed: LegacyMessage = serde_json::from_str(message).ok()?;
        (!parsed.action.is_empty() && !parsed.customer_identifier.is_empty()).then_some(parsed)
    }
}

/// Compares license ARNs on their trailing license id (events may omit the
/// `arn:` prefix).
pub fn same_license(one: &str, other: &str) -> bool {
    let tail = |arn: &str| {
        arn.trim()
            .rsplit(['/', ':'])
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    !one.trim().is_empty() && tail(one) == tail(other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_and_drop_their_role() {
        let body = br#"{"version":"0","id":"e-1","detail-type":"License Updated - Manufacturer",
          "source":"aws.agreement-marketplace","account":"1","time":"2026-11-01T12:00:00Z","region":"us-east-1",
          "resources":[],"detail":{"agreement":{"id":"agmt-1"},"product":{"code":"p","id":"prod-1"},
          "license":{"arn":"aws:license-manager::1:license:l-1"},"acceptor":{"accountId":"012345678901"},"offer":{"id":"offer-1"}}}"#;
        let event = Envelope::parse(body).unwrap();
        assert_eq!(event.kind(), detail_type::LICENSE_UPDATED);
        let detail = event.detail();
        assert_eq!(detail.acceptor.unwrap().account_id, "012345678901");
        assert!(same_license(
            &detail.license.unwrap().arn,
            "arn:aws:license-manager::1:license:l-1"
        ));
        assert!(Envelope::parse(br#"{"id":"x","source":"aws.ec2"}"#).is_none());
    }

    #[test]
    fn legacy_messages_take_the_free_trial_flag_as_text() {
        let message = LegacyMessage::parse(
            r#"{"action":"subscribe-success","customer-identifier":"c","product-code":"p","isFreeTrialTermPresent":"true"}"#,
        )
        .unwrap();
        assert_eq!(message.free_trial, Some(true));
    }
}
