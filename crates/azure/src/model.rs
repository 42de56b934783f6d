//! The JSON of the SaaS Fulfillment API v2, the connection webhook and the
//! metering API. Read leniently: every field optional, unknown fields kept
//! (Microsoft adds fields; the emulator spells some differently). Enum
//! values are compared as the PascalCase strings Microsoft sends.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `saasSubscriptionStatus` values.
pub mod status {
    /// Documented, not seen in flows; treated like pending.
    pub const NOT_STARTED: &str = "NotStarted";
    /// Purchased, not activated.
    pub const PENDING_FULFILLMENT_START: &str = "PendingFulfillmentStart";
    /// Active and billed.
    pub const SUBSCRIBED: &str = "Subscribed";
    /// Payment problem.
    pub const SUSPENDED: &str = "Suspended";
    /// Terminal.
    pub const UNSUBSCRIBED: &str = "Unsubscribed";
}

/// Webhook and operation `action` values.
pub mod action {
    /// Subscribed (only some doc copies).
    pub const SUBSCRIBE: &str = "Subscribe";
    /// Plan change.
    pub const CHANGE_PLAN: &str = "ChangePlan";
    /// Seat change.
    pub const CHANGE_QUANTITY: &str = "ChangeQuantity";
    /// Renewal.
    pub const RENEW: &str = "Renew";
    /// Suspension.
    pub const SUSPEND: &str = "Suspend";
    /// Cancellation.
    pub const UNSUBSCRIBE: &str = "Unsubscribe";
    /// End of a suspension.
    pub const REINSTATE: &str = "Reinstate";

    /// Every action we act on.
    pub const ALL: [&str; 7] = [
        SUBSCRIBE,
        CHANGE_PLAN,
        CHANGE_QUANTITY,
        RENEW,
        SUSPEND,
        UNSUBSCRIBE,
        REINSTATE,
    ];

    /// True for the actions the publisher may accept or reject.
    pub fn is_decidable(action: &str) -> bool {
        action == CHANGE_PLAN || action == CHANGE_QUANTITY
    }
}

/// Operation `status` values.
pub mod operation_status {
    /// Not started.
    pub const NOT_STARTED: &str = "NotStarted";
    /// Waiting (for the publisher, for ChangePlan/ChangeQuantity).
    pub const IN_PROGRESS: &str = "InProgress";
    /// Failed.
    pub const FAILED: &str = "Failed";
    /// Done.
    pub const SUCCEEDED: &str = "Succeeded";
    /// Conflict.
    pub const CONFLICT: &str = "Conflict";
}

/// A person or tenant (`beneficiary`, `purchaser`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    /// Email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_id: Option<String>,
    /// Entra object id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_id: Option<String>,
    /// Entra tenant id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Passport id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub puid: Option<String>,
    /// Anything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A subscription's term.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Term {
    /// Start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<String>,
    /// End.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<String>,
    /// `P1M`, `P1Y`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term_unit: Option<String>,
    /// Anything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A SaaS subscription (§3.5).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// The subscription id (the metering `resourceId`).
    #[serde(default)]
    pub id: String,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Publisher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher_id: Option<String>,
    /// Offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_id: Option<String>,
    /// Plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    /// Seats, for per-seat plans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u64>,
    /// Who uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beneficiary: Option<Identity>,
    /// Who bought it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchaser: Option<Identity>,
    /// `None` or `DryRun`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_mode: Option<String>,
    /// Free trial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_free_trial: Option<bool>,
    /// Test purchase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_test: Option<bool>,
    /// `None` or `Csp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_type: Option<String>,
    /// Renews automatically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_renew: Option<bool>,
    /// `saasSubscriptionStatus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saas_subscription_status: Option<String>,
    /// The term.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<Term>,
    /// Created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Last modified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// Anything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Subscription {
    /// The status, `NotStarted` when absent.
    pub fn status(&self) -> &str {
        self.saas_subscription_status
            .as_deref()
            .unwrap_or(status::NOT_STARTED)
    }

    /// The plan id, empty when absent.
    pub fn plan(&self) -> &str {
        self.plan_id.as_deref().unwrap_or_default()
    }

    /// The offer id, empty when absent.
    pub fn offer(&self) -> &str {
        self.offer_id.as_deref().unwrap_or_default()
    }

    /// True for a test purchase (preview audience, CSP sandbox, dry run).
    pub fn is_test_purchase(&self) -> bool {
        self.is_test == Some(true)
            || self
                .sandbox_type
                .as_deref()
                .is_some_and(|s| !s.is_empty() && s != "None")
            || self.session_mode.as_deref() == Some("DryRun")
    }

    /// The tenant that uses it: the beneficiary's tenant, else the
    /// purchaser's, else the subscription id itself.
    pub fn customer_tenant(&self) -> String {
        self.beneficiary
            .as_ref()
            .and_then(|b| b.tenant_id.clone())
            .or_else(|| self.purchaser.as_ref().and_then(|p| p.tenant_id.clone()))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| self.id.clone())
    }
}

/// The answer of Resolve (§3.2).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resolved {
    /// The subscription id.
    #[serde(default)]
    pub id: String,
    /// Its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_name: Option<String>,
    /// Offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_id: Option<String>,
    /// Plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    /// Seats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u64>,
    /// The subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<Subscription>,
    /// Anything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An operation (§3.9) or a webhook call's body (§4).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// The operation id.
    #[serde(default)]
    pub id: String,
    /// Activity id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_id: Option<String>,
    /// The subscription.
    #[serde(default)]
    pub subscription_id: String,
    /// Offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_id: Option<String>,
    /// Publisher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher_id: Option<String>,
    /// The plan after the operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    /// The quantity after the operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u64>,
    /// What it does.
    #[serde(default)]
    pub action: String,
    /// When.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_stamp: Option<String>,
    /// `InProgress`, `Succeeded`, ...
    #[serde(default)]
    pub status: String,
    /// `Azure` or `Partner` (the emulator says `operationRequestedSource`).
    #[serde(
        default,
        alias = "operationRequestedSource",
        skip_serializing_if = "Option::is_none"
    )]
    pub operation_request_source: Option<String>,
    /// The subscription as it is (webhook calls only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<Subscription>,
    /// Error status code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_status_code: Option<Value>,
    /// Error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<Value>,
    /// Anything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Operation {
    /// True when Microsoft (the customer) started it.
    pub fn from_azure(&self) -> bool {
        self.operation_request_source
            .as_deref()
            .is_none_or(|s| s.eq_ignore_ascii_case("Azure"))
    }
}

/// A plan the customer may switch to (§3.6).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AvailablePlan {
    /// Plan id.
    #[serde(default)]
    pub plan_id: String,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Private plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_private: Option<bool>,
    /// Per seat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_price_per_seat: Option<bool>,
    /// Anything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One usage event (§6.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageEvent {
    /// The SaaS subscription id.
    pub resource_id: String,
    /// Units in the hour (> 0).
    pub quantity: f64,
    /// The dimension id.
    pub dimension: String,
    /// Start of the hour (UTC).
    pub effective_start_time: String,
    /// The subscription's plan.
    pub plan_id: String,
}

/// A batch of usage events (§6.2), at most [`MAX_BATCH`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchUsageRequest {
    /// The events.
    pub request: Vec<UsageEvent>,
}

/// Most events in a batch.
pub const MAX_BATCH: usize = 25;

/// Per-item metering statuses.
pub mod usage_status {
    /// Taken.
    pub const ACCEPTED: &str = "Accepted";
    /// Older than 24 hours.
    pub const EXPIRED: &str = "Expired";
    /// Already taken for that resource, dimension and hour.
    pub const DUPLICATE: &str = "Duplicate";
    /// Failed (retry).
    pub const ERROR: &str = "Error";
    /// The subscription is not active.
    pub const RESOURCE_NOT_ACTIVE: &str = "ResourceNotActive";
}

/// One item of a batch answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageResult {
    /// Microsoft's id of the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_event_id: Option<String>,
    /// Status.
    #[serde(default)]
    pub status: String,
    /// The resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// The dimension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimension: Option<String>,
    /// The hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_start_time: Option<String>,
    /// Quantity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<f64>,
    /// The error, when not accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    /// Anything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A batch answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchUsageResponse {
    /// Items.
    #[serde(default)]
    pub count: Option<u64>,
    /// One result per event.
    #[serde(default)]
    pub result: Vec<UsageResult>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_read_both_spellings_of_the_source_and_keep_unknown_fields() {
        let real: Operation = serde_json::from_str(
            r#"{"id":"o","subscriptionId":"s","action":"ChangePlan","status":"InProgress","operationRequestSource":"Partner","newField":1}"#,
        )
        .unwrap();
        assert!(!real.from_azure());
        assert_eq!(real.extra.get("newField"), Some(&Value::from(1)));
        let emulator: Operation = serde_json::from_str(
            r#"{"id":"o","subscriptionId":"s","action":"Suspend","status":"Succeeded","operationRequestedSource":"Azure"}"#,
        )
        .unwrap();
        assert!(emulator.from_azure());
    }

    #[test]
    fn test_purchases_are_recognised() {
        let sandbox: Subscription =
            serde_json::from_str(r#"{"id":"s","sandboxType":"Csp"}"#).unwrap();
        assert!(sandbox.is_test_purchase());
        let none: Subscription =
            serde_json::from_str(r#"{"id":"s","sandboxType":"None","isTest":false}"#).unwrap();
        assert!(!none.is_test_purchase());
    }
}
