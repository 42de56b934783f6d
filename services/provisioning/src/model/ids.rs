//! Ids the provisioning service passes around: the typed ids of
//! `marketbridge_core::ids` for our own rows, and newtypes for the ids others
//! choose (a marketplace's, the catalog's, a provider's).

use marketbridge_core::ids::{AccountId, ClaimId, ResourceId, SubscriptionId};
use marketbridge_core::{Error, Result};
use serde::{Deserialize, Deserializer, Serializer};

pub use marketbridge_core::ids::{ExternalId, MetricId, PlanId, ProductId};

marketbridge_core::text_id! {
    /// A provider's id of a resource an account may import: 1 to 128
    /// letters, digits, `_` or `-`.
    ImportableId;
    /// A transfer claim: a generated `clm_...` id or one the marketplace
    /// chose (printable, no spaces or slashes).
    TransferClaimId;
}

/// Longest claim id a marketplace may choose.
pub const MAX_CLAIM_ID: usize = 128;

impl ImportableId {
    /// Parses a provider's id; `field` names the input in the error.
    pub fn parse(field: &str, text: &str) -> Result<Self> {
        let plain = !text.is_empty()
            && text.len() <= 128
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if plain {
            Ok(Self(text.to_owned()))
        } else {
            Err(Error::invalid_field(
                field,
                "must be 1 to 128 letters, digits, `_` or `-`",
            ))
        }
    }
}

impl TransferClaimId {
    /// A new generated claim id.
    pub fn generate() -> Self {
        Self(ClaimId::generate().into_string())
    }

    /// Parses a claim id a marketplace chose; `field` names the input in
    /// the error.
    pub fn parse(field: &str, text: &str) -> Result<Self> {
        let valid = !text.is_empty()
            && text.len() <= MAX_CLAIM_ID
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(Error::invalid_field(
                field,
                format!("must be 1 to {MAX_CLAIM_ID} letters, digits, `_`, `-`, `.` or `:`"),
            ))
        }
    }
}

/// A typed id of `marketbridge_core::ids` read from text.
pub trait ParsedId: Sized + AsRef<str> {
    /// Parses the id; `field` names it in the error.
    fn parse_id(field: &str, text: &str) -> Result<Self>;
}

macro_rules! parsed_id {
    ($($name:ident),+) => {$(
        impl ParsedId for $name {
            fn parse_id(field: &str, text: &str) -> Result<Self> {
                $name::parse(field, text)
            }
        }
    )+};
}

parsed_id!(AccountId, ResourceId, SubscriptionId);

/// An id read back from a stored row: a value that does not parse is
/// corrupt data, an internal error (never shown as a validation error).
pub fn stored_id<T: ParsedId>(column: &str, text: &str) -> Result<T> {
    T::parse_id(column, text)
        .map_err(|_| Error::internal(format!("stored {column} `{text}` is not a valid id")))
}

/// Serializes a typed id as its text and reads it back parsed (job
/// payloads keep their shape: `"resource_id": "res_..."`).
pub mod typed_id {
    use super::*;

    /// Writes the id as text.
    pub fn serialize<T: ParsedId, S: Serializer>(id: &T, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(id.as_ref())
    }

    /// Reads and parses the id.
    pub fn deserialize<'de, T: ParsedId, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<T, D::Error> {
        let text = String::deserialize(deserializer)?;
        T::parse_id("id", &text).map_err(serde::de::Error::custom)
    }

    type Result<T, E> = std::result::Result<T, E>;
}
