//! Marketplace notifications as Pub/Sub carries them: the push envelope, the
//! Pub/Sub message, and the small JSON payload inside `message.data` (ids, an
//! update time and a few hints; never the resource itself).
//!
//! Input is read leniently: unknown fields are kept, every hint is optional,
//! `eventType` may be missing (it is then derived from the `account` or
//! `entitlement` key), and both spellings Google uses for a field are
//! accepted.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use marketbridge_core::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Event types of the Marketplace notification catalogue.
pub mod event_type {
    /// Deprecated account creation event; handled like `ACCOUNT_ACTIVE`.
    pub const ACCOUNT_CREATION_REQUESTED: &str = "ACCOUNT_CREATION_REQUESTED";
    /// The account exists (first purchase, or after an approval).
    pub const ACCOUNT_ACTIVE: &str = "ACCOUNT_ACTIVE";
    /// The account was removed from the Marketplace.
    pub const ACCOUNT_DELETED: &str = "ACCOUNT_DELETED";
    /// A customer chose a plan; the provider approves or rejects.
    pub const ENTITLEMENT_CREATION_REQUESTED: &str = "ENTITLEMENT_CREATION_REQUESTED";
    /// A private offer with automatic approval was accepted.
    pub const ENTITLEMENT_OFFER_ACCEPTED: &str = "ENTITLEMENT_OFFER_ACCEPTED";
    /// The entitlement is active; provision.
    pub const ENTITLEMENT_ACTIVE: &str = "ENTITLEMENT_ACTIVE";
    /// The customer asked for another plan; the provider decides.
    pub const ENTITLEMENT_PLAN_CHANGE_REQUESTED: &str = "ENTITLEMENT_PLAN_CHANGE_REQUESTED";
    /// A plan change took effect.
    pub const ENTITLEMENT_PLAN_CHANGED: &str = "ENTITLEMENT_PLAN_CHANGED";
    /// A plan change was withdrawn or rejected.
    pub const ENTITLEMENT_PLAN_CHANGE_CANCELLED: &str = "ENTITLEMENT_PLAN_CHANGE_CANCELLED";
    /// The entitlement ends at the end of its term.
    pub const ENTITLEMENT_PENDING_CANCELLATION: &str = "ENTITLEMENT_PENDING_CANCELLATION";
    /// A pending cancellation was reverted.
    pub const ENTITLEMENT_CANCELLATION_REVERTED: &str = "ENTITLEMENT_CANCELLATION_REVERTED";
    /// A cancellation is in progress.
    pub const ENTITLEMENT_CANCELLING: &str = "ENTITLEMENT_CANCELLING";
    /// The entitlement ended; deprovision.
    pub const ENTITLEMENT_CANCELLED: &str = "ENTITLEMENT_CANCELLED";
    /// The entitlement renewed for another term.
    pub const ENTITLEMENT_RENEWED: &str = "ENTITLEMENT_RENEWED";
    /// A private offer's term ended.
    pub const ENTITLEMENT_OFFER_ENDED: &str = "ENTITLEMENT_OFFER_ENDED";
    /// The entitlement's record was deleted (after cancellation).
    pub const ENTITLEMENT_DELETED: &str = "ENTITLEMENT_DELETED";
    /// Recorded type of an entitlement message that named no `eventType`.
    pub const ENTITLEMENT_NOTIFICATION: &str = "ENTITLEMENT_NOTIFICATION";

    /// Account event types.
    pub const ACCOUNT_EVENTS: [&str; 3] =
        [ACCOUNT_CREATION_REQUESTED, ACCOUNT_ACTIVE, ACCOUNT_DELETED];

    /// Entitlement event types (including the derived one).
    pub const ENTITLEMENT_EVENTS: [&str; 14] = [
        ENTITLEMENT_CREATION_REQUESTED,
        ENTITLEMENT_OFFER_ACCEPTED,
        ENTITLEMENT_ACTIVE,
        ENTITLEMENT_PLAN_CHANGE_REQUESTED,
        ENTITLEMENT_PLAN_CHANGED,
        ENTITLEMENT_PLAN_CHANGE_CANCELLED,
        ENTITLEMENT_PENDING_CANCELLATION,
        ENTITLEMENT_CANCELLATION_REVERTED,
        ENTITLEMENT_CANCELLING,
        ENTITLEMENT_CANCELLED,
        ENTITLEMENT_RENEWED,
        ENTITLEMENT_OFFER_ENDED,
        ENTITLEMENT_DELETED,
        ENTITLEMENT_NOTIFICATION,
    ];

    /// True for the account event types.
    pub fn is_account_event(event_type: &str) -> bool {
        ACCOUNT_EVENTS.contains(&event_type)
    }

    /// True for the entitlement event types.
    pub fn is_entitlement_event(event_type: &str) -> bool {
        ENTITLEMENT_EVENTS.contains(&event_type)
    }
}

/// What Pub/Sub POSTs to a push endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushEnvelope {
    /// The message.
    pub message: PubsubMessage,
    /// The subscription that delivered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
    /// Delivery attempt, when a dead-letter policy is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_attempt: Option<i64>,
}

/// A Pub/Sub message. Push deliveries carry the id and publish time twice
/// (camelCase and snake_case); both are read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PubsubMessage {
    /// Base64 of the payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Attributes (none are documented for Marketplace messages).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// Message id.
    #[serde(default, rename = "messageId", skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Message id, snake_case spelling.
    #[serde(
        default,
        rename = "message_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub message_id_snake: Option<String>,
    /// Publish time (RFC 3339).
    #[serde(
        default,
        rename = "publishTime",
        skip_serializing_if = "Option::is_none"
    )]
    pub publish_time: Option<String>,
    /// Publish time, snake_case spelling.
    #[serde(
        default,
        rename = "publish_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub publish_time_snake: Option<String>,
    /// Ordering key, if any.
    #[serde(
        default,
        rename = "orderingKey",
        skip_serializing_if = "Option::is_none"
    )]
    pub ordering_key: Option<String>,
}

impl PubsubMessage {
    /// The message id, whichever spelling carried it.
    pub fn id(&self) -> Option<&str> {
        self.message_id
            .as_deref()
            .or(self.message_id_snake.as_deref())
    }

    /// The publish time, when present and readable.
    pub fn published_at(&self) -> Option<DateTime<Utc>> {
        self.publish_time
            .as_deref()
            .or(self.publish_time_snake.as_deref())
            .and_then(|text| DateTime::parse_from_rfc3339(text.trim()).ok())
            .map(|time| time.with_timezone(&Utc))
    }
}

/// The JSON inside `message.data`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Unique id of the event; the deduplication key.
    #[serde(default)]
    pub event_id: Option<String>,
    /// Event type; missing in some account messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// The provider the event is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// Present in account events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountHint>,
    /// Present in entitlement events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitlement: Option<EntitlementHint>,
    /// Anything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The `account` part of a notification.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountHint {
    /// Procurement account id.
    #[serde(default)]
    pub id: String,
    /// Update time of the account (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<String>,
    /// Anything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The `entitlement` part of a notification: the id, an update time, and
/// hints about what changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntitlementHint {
    /// Entitlement id.
    #[serde(default)]
    pub id: String,
    /// Update time of the entitlement (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<String>,
    /// The new plan (creation and plan changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_plan: Option<String>,
    /// The new product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_product: Option<String>,
    /// The new offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_offer: Option<String>,
    /// Duration of the new offer (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_offer_duration: Option<String>,
    /// The same, as some documents spell it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_pending_offer_duration: Option<String>,
    /// When the new offer starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_offer_start_time: Option<String>,
    /// When the new offer ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_offer_end_time: Option<String>,
    /// Order id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// Benefit ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entitlement_benefit_ids: Vec<String>,
    /// Anything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl EntitlementHint {
    /// The offer duration, whichever spelling carried it.
    pub fn offer_duration(&self) -> Option<&str> {
        self.new_offer_duration
            .as_deref()
            .or(self.new_pending_offer_duration.as_deref())
    }
}

/// A notification decoded from a Pub/Sub message, ready to be recorded.
#[derive(Debug, Clone)]
pub struct DecodedNotification {
    /// `eventId`.
    pub event_id: String,
    /// `eventType`, or the type derived from the key present.
    pub event_type: String,
    /// The payload.
    pub notification: Notification,
    /// The payload as JSON text (what is recorded).
    pub payload_json: String,
    /// When Pub/Sub published it.
    pub published_at: Option<DateTime<Utc>>,
}

impl Notification {
    /// The procurement account id this event concerns, if it is an account
    /// event.
    pub fn account_id(&self) -> Option<&str> {
        self.account
            .as_ref()
            .map(|a| a.id.trim())
            .filter(|id| !id.is_empty())
    }

    /// The entitlement id this event concerns, if it is an entitlement event.
    pub fn entitlement_id(&self) -> Option<&str> {
        self.entitlement
            .as_ref()
            .map(|e| e.id.trim())
            .filter(|id| !id.is_empty())
    }

    /// Parses the payload of a message.
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| {
            Error::invalid_field("message.data", format!("is not a notification: {e}"))
        })
    }
}

/// Decodes standard base64 (padding optional); URL-safe text is accepted
/// too.
pub fn decode_base64(field: &str, text: &str) -> Result<Vec<u8>> {
    let text = text.trim();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .ok_or_else(|| Error::invalid_field(field, "is not base64"))
}

/// Base64 (standard, padded) of a payload, as Pub/Sub encodes `data`.
pub fn encode_base64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Decodes a message into a notification: base64 `data`, JSON, a non-empty
/// `eventId`, and an `account` or `entitlement` key. Every failure is a
/// validation error naming the field.
pub fn decode_message(message: &PubsubMessage) -> Result<DecodedNotification> {
    let data = message
        .data
        .as_deref()
        .filter(|d| !d.trim().is_empty())
        .ok_or_else(|| Error::invalid_field("message.data", "is missing"))?;
    let bytes = decode_base64("message.data", data)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::invalid_field("message.data", "is not UTF-8 text"))?;
    let notification = Notification::from_json(&text)?;
    let event_id = notification
        .event_id
        .as_deref()
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| Error::invalid_field("message.data.eventId", "is missing"))?
        .to_owned();
    if event_id.len() > 255 {
        return Err(Error::invalid_field(
            "message.data.eventId",
            "is longer than 255 characters",
        ));
    }
    let explicit_type = notification
        .event_type
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let event_type = match (
        explicit_type,
        notification.account_id(),
        notification.entitlement_id(),
    ) {
        (Some(explicit), _, _) => explicit.to_owned(),
        (None, Some(_), _) => event_type::ACCOUNT_ACTIVE.to_owned(),
        (None, None, Some(_)) => event_type::ENTITLEMENT_NOTIFICATION.to_owned(),
        (None, None, None) => {
            return Err(Error::invalid_field(
                "message.data",
                "names neither an account nor an entitlement",
            ));
        }
    };
    if event_type::is_account_event(&event_type) && notification.account_id().is_none() {
        return Err(Error::invalid_field(
            "message.data.account.id",
            format!("a {event_type} notification must name an account"),
        ));
    }
    if event_type::is_entitlement_event(&event_type) && notification.entitlement_id().is_none() {
        return Err(Error::invalid_field(
            "message.data.entitlement.id",
            format!("a {event_type} notification must name an entitlement"),
        ));
    }
    if event_type.len() > 128 {
        return Err(Error::invalid_field(
            "message.data.eventType",
            "is longer than 128 characters",
        ));
    }
    Ok(DecodedNotification {
        event_id,
        event_type,
        notification,
        payload_json: text,
        published_at: message.published_at(),
    })
}

/// Parses a push delivery body and decodes its message.
pub fn decode_push_body(body: &[u8]) -> Result<(PushEnvelope, DecodedNotification)> {
    let envelope: PushEnvelope = serde_json::from_slice(body)
        .map_err(|e| Error::validation(format!("the body is not a Pub/Sub push envelope: {e}")))?;
    let decoded = decode_message(&envelope.message)?;
    Ok((envelope, decoded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(data: &Value) -> PubsubMessage {
        PubsubMessage {
            data: Some(encode_base64(data.to_string().as_bytes())),
            message_id: Some("1".into()),
            ..Default::default()
        }
    }

    #[test]
    fn push_envelopes_with_both_spellings_decode() {
        let data = encode_base64(
            json!({"eventId": "CREATE_ENTITLEMENT-1", "eventType": "ENTITLEMENT_OFFER_ACCEPTED",
                "providerId": "DEMO-p", "entitlement": {"id": "e-1", "updateTime": "2026-01-21T00:06:19.754732Z",
                "newPendingOfferDuration": "P1Y", "orderId": "o-1", "somethingNew": 3}})
            .to_string()
            .as_bytes(),
        );
        let body = json!({"message": {"data": data, "attributes": {"k": "v"}, "messageId": "2070",
            "message_id": "2070", "publishTime": "2021-02-26T19:13:55.749Z",
            "publish_time": "2021-02-26T19:13:55.749Z"},
            "subscription": "projects/p/subscriptions/s", "deliveryAttempt": 2});
        let (envelope, decoded) = decode_push_body(body.to_string().as_bytes()).unwrap();
        assert_eq!(envelope.message.id(), Some("2070"));
        assert_eq!(envelope.delivery_attempt, Some(2));
        assert_eq!(decoded.event_id, "CREATE_ENTITLEMENT-1");
        assert_eq!(decoded.event_type, "ENTITLEMENT_OFFER_ACCEPTED");
        let hint = decoded.notification.entitlement.as_ref().unwrap();
        assert_eq!(hint.offer_duration(), Some("P1Y"));
        assert_eq!(hint.order_id.as_deref(), Some("o-1"));
        assert!(hint.extra.contains_key("somethingNew"));
        assert!(decoded.published_at.is_some());
    }

    #[test]
    fn event_type_is_derived_from_the_key_present() {
        let account = decode_message(&message(
            &json!({"eventId": "a-1", "providerId": "p", "account": {"id": "acct-1", "updateTime": "2026-01-01T00:00:00Z"}}),
        ))
        .unwrap();
        assert_eq!(account.event_type, event_type::ACCOUNT_ACTIVE);
        assert_eq!(account.notification.account_id(), Some("acct-1"));
        let entitlement = decode_message(&message(
            &json!({"eventId": "e-1", "entitlement": {"id": "ent-1"}}),
        ))
        .unwrap();
        assert_eq!(entitlement.event_type, event_type::ENTITLEMENT_NOTIFICATION);
    }

    #[test]
    fn malformed_messages_name_the_problem() {
        let missing = decode_message(&PubsubMessage::default()).unwrap_err();
        assert!(missing.message().contains("message.data"), "{missing}");
        let not_base64 = decode_message(&PubsubMessage {
            data: Some("***".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(not_base64.message().contains("base64"), "{not_base64}");
        let not_json = decode_message(&PubsubMessage {
            data: Some(encode_base64(b"hello")),
            ..Default::default()
        })
        .unwrap_err();
        assert!(not_json.message().contains("notification"), "{not_json}");
        let no_id = decode_message(&message(&json!({"account": {"id": "a"}}))).unwrap_err();
        assert!(no_id.message().contains("eventId"), "{no_id}");
        let no_key = decode_message(&message(&json!({"eventId": "x"}))).unwrap_err();
        assert!(no_key.message().contains("neither"), "{no_key}");
        let typed_without_key = decode_message(&message(
            &json!({"eventId": "x", "eventType": "ENTITLEMENT_ACTIVE"}),
        ))
        .unwrap_err();
        assert!(
            typed_without_key.message().contains("entitlement"),
            "{typed_without_key}"
        );
        let future = decode_message(&message(
            &json!({"eventId": "x", "eventType": "SOMETHING_NEW", "thing": {"id": "t"}}),
        ))
        .unwrap();
        assert_eq!(
            future.event_type, "SOMETHING_NEW",
            "unknown types are accepted"
        );
        assert!(decode_push_body(b"{}").is_err());
        assert!(decode_push_body(b"not json").is_err());
    }
}
