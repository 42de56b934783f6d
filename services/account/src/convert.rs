//! Rows to protobuf messages, and the small JSON shapes stored in columns.

use crate::entity::{account, event};
use chrono::{DateTime, Utc};
use marketbridge_core::time::to_timestamp;
use marketbridge_core::{Error, Marketplace, Result};
use marketbridge_proto::account::v1 as pb;
use marketbridge_proto::common::v1::{MarketplaceRef, Person};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A person as stored in JSON columns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPerson {
    #[serde(default)]
    pub external_id: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub last_seen_at: Option<DateTime<Utc>>,
}

impl StoredPerson {
    pub fn from_proto(person: &Person) -> Self {
        Self {
            external_id: person.external_id.trim().to_owned(),
            email: person.email.trim().to_owned(),
            name: person.name.trim().to_owned(),
            role: person.role.trim().to_owned(),
            last_seen_at: None,
        }
    }

    pub fn to_proto(&self) -> Person {
        Person {
            external_id: self.external_id.clone(),
            email: self.email.clone(),
            name: self.name.clone(),
            role: self.role.clone(),
            last_seen_at: self.last_seen_at.map(to_timestamp),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.external_id.is_empty() && self.email.is_empty() && self.name.is_empty()
    }

    /// Same person: same marketplace id, or same e-mail when ids are absent.
    pub fn same_as(&self, other: &StoredPerson) -> bool {
        if !self.external_id.is_empty() && !other.external_id.is_empty() {
            return self.external_id == other.external_id;
        }
        !self.email.is_empty() && self.email.eq_ignore_ascii_case(&other.email)
    }
}

pub fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

pub fn from_json<T: for<'de> Deserialize<'de> + Default>(text: &str) -> T {
    serde_json::from_str(text).unwrap_or_default()
}

pub mod account_state {
    pub const ACTIVE: &str = "active";
    pub const DELETION_PENDING: &str = "deletion_pending";
    pub const DELETED: &str = "deleted";
}

pub mod signup_state {
    pub const NOT_REQUIRED: &str = "not_required";
    pub const PENDING: &str = "pending";
    pub const APPROVING: &str = "approving";
    pub const APPROVED: &str = "approved";
    pub const REJECTED: &str = "rejected";
}

pub mod event_status {
    pub const RECEIVED: &str = "received";
    pub const PROCESSED: &str = "processed";
    pub const IGNORED: &str = "ignored";
    pub const FAILED: &str = "failed";
}

pub fn account_state_to_proto(state: &str) -> pb::AccountState {
    match state {
        account_state::ACTIVE => pb::AccountState::Active,
        account_state::DELETION_PENDING => pb::AccountState::DeletionPending,
        account_state::DELETED => pb::AccountState::Deleted,
        _ => pb::AccountState::Unspecified,
    }
}

pub fn account_state_from_proto(state: pb::AccountState) -> Option<&'static str> {
    match state {
        pb::AccountState::Active => Some(account_state::ACTIVE),
        pb::AccountState::DeletionPending => Some(account_state::DELETION_PENDING),
        pb::AccountState::Deleted => Some(account_state::DELETED),
        pb::AccountState::Unspecified => None,
    }
}

pub fn signup_to_proto(state: &str) -> pb::SignupState {
    match state {
        signup_state::NOT_REQUIRED => pb::SignupState::NotRequired,
        signup_state::PENDING => pb::SignupState::Pending,
        signup_state::APPROVING => pb::SignupState::Approving,
        signup_state::APPROVED => pb::SignupState::Approved,
        signup_state::REJECTED => pb::SignupState::Rejected,
        _ => pb::SignupState::Unspecified,
    }
}

pub fn signup_from_proto(state: pb::SignupState) -> Option<&'static str> {
    match state {
        pb::SignupState::NotRequired => Some(signup_state::NOT_REQUIRED),
        pb::SignupState::Pending => Some(signup_state::PENDING),
        pb::SignupState::Approving => Some(signup_state::APPROVING),
        pb::SignupState::Approved => Some(signup_state::APPROVED),
        pb::SignupState::Rejected => Some(signup_state::REJECTED),
        pb::SignupState::Unspecified => None,
    }
}

pub fn event_status_to_proto(status: &str) -> pb::EventStatus {
    match status {
        event_status::RECEIVED => pb::EventStatus::Received,
        event_status::PROCESSED => pb::EventStatus::Processed,
        event_status::IGNORED => pb::EventStatus::Ignored,
        event_status::FAILED => pb::EventStatus::Failed,
        _ => pb::EventStatus::Unspecified,
    }
}

/// The stored marketplace name of a row.
pub fn marketplace_of(name: &str) -> Result<Marketplace> {
    Marketplace::parse("marketplace", name)
        .map_err(|_| Error::internal(format!("stored marketplace `{name}` unknown")))
}

pub fn account_to_proto(row: &account::Model) -> pb::Account {
    let marketplace = Marketplace::parse("marketplace", &row.marketplace)
        .map(Marketplace::to_proto)
        .unwrap_or(0);
    let contact: StoredPerson = from_json(&row.contact);
    let people: Vec<StoredPerson> = from_json(&row.people);
    let terms: BTreeMap<String, DateTime<Utc>> = from_json(&row.accepted_terms);
    pb::Account {
        id: row.id.clone(),
        marketplace_ref: Some(MarketplaceRef {
            marketplace,
            external_id: row.external_id.clone(),
        }),
        display_name: row.display_name.clone(),
        url: row.url.clone(),
        contact: (!contact.is_empty()).then(|| contact.to_proto()),
        people: people.iter().map(StoredPerson::to_proto).collect(),
        state: account_state_to_proto(&row.state) as i32,
        signup_state: signup_to_proto(&row.signup_state) as i32,
        signup_reason: row.signup_reason.clone(),
        accepted_terms: terms
            .into_iter()
            .map(|(policy_id, at)| pb::AcceptedTerms {
                policy_id,
                accepted_at: Some(to_timestamp(at)),
            })
            .collect(),
        scopes: from_json(&row.scopes),
        has_credential: row.credential.is_some(),
        marketplace_state: row.marketplace_state.clone(),
        marketplace_update_time: row.marketplace_update_time.map(to_timestamp),
        attributes: from_json(&row.attributes),
        created_at: Some(to_timestamp(row.created_at)),
        updated_at: Some(to_timestamp(row.updated_at)),
        deletion_requested_at: row.deletion_requested_at.map(to_timestamp),
        finalized_at: row.finalized_at.map(to_timestamp),
        purged: row.purged,
        company: row.company.clone(),
        marketplace_gone_at: row.marketplace_gone_at.map(to_timestamp),
        marketplace_gone_reason: row.marketplace_gone_reason.clone().unwrap_or_default(),
        credential_rotated_at: row.credential_rotated_at.map(to_timestamp),
        credential_revocation_pending: row.previous_credential.is_some(),
    }
}

pub fn event_to_proto(row: &event::Model) -> pb::MarketplaceEvent {
    pb::MarketplaceEvent {
        id: row.id.clone(),
        marketplace: Marketplace::parse("marketplace", &row.marketplace)
            .map(Marketplace::to_proto)
            .unwrap_or(0),
        external_id: row.external_id.clone(),
        event_type: row.event_type.clone(),
        payload_json: row.payload.clone(),
        occurred_at: row.occurred_at.map(to_timestamp),
        received_at: Some(to_timestamp(row.received_at)),
        status: event_status_to_proto(&row.status) as i32,
        error: row.error.clone(),
        channel: row.channel.clone(),
        account_id: row.account_id.clone().unwrap_or_default(),
        deliveries: u32::try_from(row.deliveries).unwrap_or(1),
    }
}
