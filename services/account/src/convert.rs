//! Rows to protobuf messages, and the small JSON shapes stored in columns.

use crate::entity::{account, event};
use crate::model::{AccountKey, AccountState, EventStatus, ExternalId, SignupState};
use chrono::{DateTime, Utc};
use marketbridge_core::ids::AccountId;
use marketbridge_core::time::to_timestamp;
use marketbridge_core::{Error, Marketplace, Result, Validator};
use marketbridge_proto::account::v1 as pb;
use marketbridge_proto::common::v1::{AccountSelector, MarketplaceRef, Person, account_selector};
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

/// A JSON column read back; unreadable stored JSON is an error (never a
/// default that the next write would store over what was there).
pub fn from_json<T: for<'de> Deserialize<'de>>(column: &str, text: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| Error::internal(format!("stored `{column}` is not readable: {e}")))
}

pub fn account_state_to_proto(state: AccountState) -> pb::AccountState {
    match state {
        AccountState::Active => pb::AccountState::Active,
        AccountState::DeletionPending => pb::AccountState::DeletionPending,
        AccountState::Deleted => pb::AccountState::Deleted,
    }
}

pub fn account_state_from_proto(state: pb::AccountState) -> Option<AccountState> {
    match state {
        pb::AccountState::Active => Some(AccountState::Active),
        pb::AccountState::DeletionPending => Some(AccountState::DeletionPending),
        pb::AccountState::Deleted => Some(AccountState::Deleted),
        pb::AccountState::Unspecified => None,
    }
}

pub fn signup_to_proto(state: SignupState) -> pb::SignupState {
    match state {
        SignupState::NotRequired => pb::SignupState::NotRequired,
        SignupState::Pending => pb::SignupState::Pending,
        SignupState::Approving => pb::SignupState::Approving,
        SignupState::Approved => pb::SignupState::Approved,
        SignupState::Rejected => pb::SignupState::Rejected,
    }
}

pub fn signup_from_proto(state: pb::SignupState) -> Option<SignupState> {
    match state {
        pb::SignupState::NotRequired => Some(SignupState::NotRequired),
        pb::SignupState::Pending => Some(SignupState::Pending),
        pb::SignupState::Approving => Some(SignupState::Approving),
        pb::SignupState::Approved => Some(SignupState::Approved),
        pb::SignupState::Rejected => Some(SignupState::Rejected),
        pb::SignupState::Unspecified => None,
    }
}

pub fn event_status_to_proto(status: EventStatus) -> pb::EventStatus {
    match status {
        EventStatus::Received => pb::EventStatus::Received,
        EventStatus::Processed => pb::EventStatus::Processed,
        EventStatus::Ignored => pb::EventStatus::Ignored,
        EventStatus::Failed => pb::EventStatus::Failed,
    }
}

/// Longest marketplace id we accept.
pub const MAX_EXTERNAL_ID: usize = 255;

/// Checks a marketplace identity from a request.
pub fn parse_marketplace_ref(
    field: &str,
    reference: Option<&MarketplaceRef>,
) -> Result<(Marketplace, ExternalId)> {
    let reference = reference.ok_or_else(|| Error::invalid_field(field, "is required"))?;
    let marketplace =
        Marketplace::from_proto(&format!("{field}.marketplace"), reference.marketplace)?;
    let external_id = reference.external_id.trim();
    let mut validator = Validator::new();
    validator.require(&format!("{field}.externalId"), external_id);
    validator.max_len(&format!("{field}.externalId"), external_id, MAX_EXTERNAL_ID);
    validator.finish()?;
    Ok((marketplace, ExternalId::new(external_id)))
}

/// The account a request's selector names, parsed.
pub fn account_key(selector: Option<&AccountSelector>) -> Result<AccountKey> {
    let selector = selector.and_then(|s| s.selector.as_ref()).ok_or_else(|| {
        Error::invalid_field(
            "account",
            "an account id or marketplace reference is required",
        )
    })?;
    match selector {
        account_selector::Selector::AccountId(id) => {
            Ok(AccountKey::Id(AccountId::parse("account.accountId", id)?))
        }
        account_selector::Selector::MarketplaceRef(reference) => {
            let (marketplace, external_id) =
                parse_marketplace_ref("account.marketplaceRef", Some(reference))?;
            Ok(AccountKey::Ref(marketplace, external_id))
        }
    }
}

/// The stored marketplace name of a row.
pub fn marketplace_of(name: &str) -> Result<Marketplace> {
    Marketplace::parse("marketplace", name)
        .map_err(|_| Error::internal(format!("stored marketplace `{name}` unknown")))
}

pub fn account_to_proto(row: &account::Model) -> Result<pb::Account> {
    let marketplace = marketplace_of(&row.marketplace)?.to_proto();
    let contact: StoredPerson = from_json("contact", &row.contact)?;
    let people: Vec<StoredPerson> = from_json("people", &row.people)?;
    let terms: BTreeMap<String, DateTime<Utc>> = from_json("accepted_terms", &row.accepted_terms)?;
    Ok(pb::Account {
        id: row.id.clone(),
        marketplace_ref: Some(MarketplaceRef {
            marketplace,
            external_id: row.external_id.clone(),
        }),
        display_name: row.display_name.clone(),
        url: row.url.clone(),
        contact: (!contact.is_empty()).then(|| contact.to_proto()),
        people: people.iter().map(StoredPerson::to_proto).collect(),
        state: account_state_to_proto(row.state) as i32,
        signup_state: signup_to_proto(row.signup_state) as i32,
        signup_reason: row.signup_reason.clone(),
        accepted_terms: terms
            .into_iter()
            .map(|(policy_id, at)| pb::AcceptedTerms {
                policy_id,
                accepted_at: Some(to_timestamp(at)),
            })
            .collect(),
        scopes: from_json("scopes", &row.scopes)?,
        has_credential: row.credential.is_some(),
        marketplace_state: row.marketplace_state.clone(),
        marketplace_update_time: row.marketplace_update_time.map(to_timestamp),
        attributes: from_json("attributes", &row.attributes)?,
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
    })
}

pub fn event_to_proto(row: &event::Model) -> Result<pb::MarketplaceEvent> {
    Ok(pb::MarketplaceEvent {
        id: row.id.clone(),
        marketplace: marketplace_of(&row.marketplace)?.to_proto(),
        external_id: row.external_id.clone(),
        event_type: row.event_type.clone(),
        payload_json: row.payload.clone(),
        occurred_at: row.occurred_at.map(to_timestamp),
        received_at: Some(to_timestamp(row.received_at)),
        status: event_status_to_proto(row.status) as i32,
        error: row.error.clone(),
        channel: row.channel.clone(),
        account_id: row.account_id.clone().unwrap_or_default(),
        deliveries: u32::try_from(row.deliveries).unwrap_or(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_stored_json_is_an_error_not_a_default() {
        assert_eq!(
            from_json::<BTreeMap<String, String>>("attributes", r#"{"a":"b"}"#).unwrap()["a"],
            "b"
        );
        let error = from_json::<BTreeMap<String, String>>("attributes", "{not json").unwrap_err();
        assert!(error.message().contains("attributes"), "{error}");
        assert!(from_json::<Vec<String>>("scopes", "").is_err());
    }
}
