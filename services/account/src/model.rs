//! The account service's vocabulary: the states stored on its rows, its
//! typed ids and its outbox jobs. Every other module builds on these; this
//! one imports nothing of the crate.
//!
//! States are stored as the same strings as always (`active`,
//! `approving`, ...); a stored value no variant names is an error when the
//! row is read, never a default.

use marketbridge_core::Marketplace;
use marketbridge_core::ids::{AccountId, EventId};
use sea_orm::{DeriveActiveEnum, EnumIter};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Whether an account is live or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum AccountState {
    /// In use.
    #[sea_orm(string_value = "active")]
    Active,
    /// Deletion requested; billing not yet finalized.
    #[sea_orm(string_value = "deletion_pending")]
    DeletionPending,
    /// Deleted and finalized.
    #[sea_orm(string_value = "deleted")]
    Deleted,
}

/// Where the account's provider signup stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum SignupState {
    /// The marketplace needs no signup (Vercel).
    #[sea_orm(string_value = "not_required")]
    NotRequired,
    /// Waiting for the customer's signup.
    #[sea_orm(string_value = "pending")]
    Pending,
    /// The customer signed up; the approval is on its way to the marketplace.
    #[sea_orm(string_value = "approving")]
    Approving,
    /// Approved at the marketplace.
    #[sea_orm(string_value = "approved")]
    Approved,
    /// Rejected.
    #[sea_orm(string_value = "rejected")]
    Rejected,
}

/// Where the processing of a recorded marketplace event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum EventStatus {
    /// Recorded; processing pending (or retrying).
    #[sea_orm(string_value = "received")]
    Received,
    /// Acted on.
    #[sea_orm(string_value = "processed")]
    Processed,
    /// Not an event we act on.
    #[sea_orm(string_value = "ignored")]
    Ignored,
    /// Processing failed for good.
    #[sea_orm(string_value = "failed")]
    Failed,
}

macro_rules! stored_text {
    ($($name:ident { $($variant:ident => $text:literal),+ $(,)? })+) => {$(
        impl $name {
            /// The stored (and logged) name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )+};
}

stored_text! {
    AccountState {
        Active => "active",
        DeletionPending => "deletion_pending",
        Deleted => "deleted",
    }
    SignupState {
        NotRequired => "not_required",
        Pending => "pending",
        Approving => "approving",
        Approved => "approved",
        Rejected => "rejected",
    }
    EventStatus {
        Received => "received",
        Processed => "processed",
        Ignored => "ignored",
        Failed => "failed",
    }
}

pub use marketbridge_core::ids::ExternalId;

marketbridge_core::text_id! {
    /// One credential rotation: the request's idempotency key, or the
    /// schedule's round. The marketplace is asked to rotate once per id.
    RotationId;
    /// A short-lived token the marketplace refused (`stale_token_id`).
    TokenId;
}

/// An account named by our id or by its marketplace's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountKey {
    /// Our id.
    Id(AccountId),
    /// The marketplace's id.
    Ref(Marketplace, ExternalId),
}

/// The outbox jobs of the account service, stored as kind and payload
/// exactly as before (`NewJob::of`, `Job::decode`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "payload")]
pub enum AccountJob {
    /// Approve the account's signup at its marketplace.
    #[serde(rename = "account.approve_signup")]
    ApproveSignup(AccountTask),
    /// Reject the account's signup at its marketplace.
    #[serde(rename = "account.reject_signup")]
    RejectSignup(AccountTask),
    /// Reset the account at its marketplace.
    #[serde(rename = "account.reset")]
    Reset(AccountTask),
    /// Tell provisioning the account's signup is approved.
    #[serde(rename = "account.notify_provisioning_approved")]
    NotifyApproved(AccountTask),
    /// Process a recorded marketplace event.
    #[serde(rename = "account.process_event")]
    ProcessEvent(EventTask),
    /// End the subscriptions of an account gone at its marketplace and
    /// deprovision its resources.
    #[serde(rename = "account.end_subscriptions")]
    EndSubscriptions(AccountTask),
    /// Rotate the account's marketplace credential and revoke the old one.
    #[serde(rename = "account.rotate_credential")]
    RotateCredential(RotationTask),
}

/// Payload of the jobs about an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountTask {
    /// Our account id.
    #[serde(with = "typed_id")]
    pub account_id: AccountId,
    /// Reason, for rejections and ended subscriptions.
    #[serde(default)]
    pub reason: String,
}

impl AccountTask {
    /// A job about an account.
    pub fn new(account_id: &AccountId) -> Self {
        Self::with_reason(account_id, "")
    }

    /// A job about an account, with a reason.
    pub fn with_reason(account_id: &AccountId, reason: &str) -> Self {
        Self {
            account_id: account_id.clone(),
            reason: reason.to_owned(),
        }
    }
}

/// Payload of event processing jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventTask {
    /// Our event id.
    #[serde(with = "typed_id")]
    pub event_id: EventId,
}

/// Payload of credential rotation jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationTask {
    /// Our account id.
    #[serde(with = "typed_id")]
    pub account_id: AccountId,
    /// The rotation.
    pub rotation_id: RotationId,
}

/// A typed id of `marketbridge_core::ids` read from text.
pub trait ParsedId: Sized + AsRef<str> {
    /// Parses the id; `field` names it in the error.
    fn parse_id(field: &str, text: &str) -> marketbridge_core::Result<Self>;
}

impl ParsedId for AccountId {
    fn parse_id(field: &str, text: &str) -> marketbridge_core::Result<Self> {
        AccountId::parse(field, text)
    }
}

impl ParsedId for EventId {
    fn parse_id(field: &str, text: &str) -> marketbridge_core::Result<Self> {
        EventId::parse(field, text)
    }
}

/// Serde for typed ids stored as their text.
mod typed_id {
    use super::ParsedId;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<T: ParsedId, S: Serializer>(id: &T, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(id.as_ref())
    }

    pub fn deserialize<'de, T: ParsedId, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<T, D::Error> {
        let text = String::deserialize(deserializer)?;
        T::parse_id("id", &text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{ActiveEnum, Iterable};

    #[test]
    fn states_are_stored_as_their_names_and_unknown_ones_are_errors() {
        for state in AccountState::iter() {
            assert_eq!(state.to_value(), state.as_str());
            assert_eq!(
                AccountState::try_from_value(&state.to_value()).unwrap(),
                state
            );
        }
        for state in SignupState::iter() {
            assert_eq!(state.to_value(), state.as_str());
            assert_eq!(
                SignupState::try_from_value(&state.to_value()).unwrap(),
                state
            );
        }
        for status in EventStatus::iter() {
            assert_eq!(status.to_value(), status.as_str());
            assert_eq!(
                EventStatus::try_from_value(&status.to_value()).unwrap(),
                status
            );
        }
        assert!(SignupState::try_from_value(&"approvd".to_owned()).is_err());
        assert!(AccountState::try_from_value(&String::new()).is_err());
    }

    #[test]
    fn jobs_keep_their_kinds_and_payloads() {
        let account = AccountId::generate();
        let event = EventId::generate();
        let cases = [
            (
                AccountJob::ApproveSignup(AccountTask::new(&account)),
                "account.approve_signup",
                serde_json::json!({"account_id": account.as_str(), "reason": ""}),
            ),
            (
                AccountJob::RejectSignup(AccountTask::with_reason(&account, "no")),
                "account.reject_signup",
                serde_json::json!({"account_id": account.as_str(), "reason": "no"}),
            ),
            (
                AccountJob::Reset(AccountTask::new(&account)),
                "account.reset",
                serde_json::json!({"account_id": account.as_str(), "reason": ""}),
            ),
            (
                AccountJob::NotifyApproved(AccountTask::new(&account)),
                "account.notify_provisioning_approved",
                serde_json::json!({"account_id": account.as_str(), "reason": ""}),
            ),
            (
                AccountJob::ProcessEvent(EventTask {
                    event_id: event.clone(),
                }),
                "account.process_event",
                serde_json::json!({"event_id": event.as_str()}),
            ),
            (
                AccountJob::EndSubscriptions(AccountTask::with_reason(&account, "gone")),
                "account.end_subscriptions",
                serde_json::json!({"account_id": account.as_str(), "reason": "gone"}),
            ),
            (
                AccountJob::RotateCredential(RotationTask {
                    account_id: account.clone(),
                    rotation_id: RotationId::new("key-1"),
                }),
                "account.rotate_credential",
                serde_json::json!({"account_id": account.as_str(), "rotation_id": "key-1"}),
            ),
        ];
        for (job, kind, payload) in cases {
            let encoded = serde_json::to_value(&job).unwrap();
            assert_eq!(encoded["kind"], kind);
            assert_eq!(encoded["payload"], payload);
            let decoded: AccountJob = serde_json::from_value(encoded).unwrap();
            assert_eq!(decoded, job);
        }
        // An older payload without a reason still reads.
        let old: AccountJob = serde_json::from_value(serde_json::json!({
            "kind": "account.reset",
            "payload": {"account_id": account.as_str()},
        }))
        .unwrap();
        assert_eq!(old, AccountJob::Reset(AccountTask::new(&account)));
        // A payload with a malformed id does not.
        assert!(
            serde_json::from_value::<AccountJob>(serde_json::json!({
                "kind": "account.reset",
                "payload": {"account_id": "acc_nope"},
            }))
            .is_err()
        );
    }
}
