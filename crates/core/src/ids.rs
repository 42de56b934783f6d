//! Typed, prefixed identifiers: an id says what it names when it shows up in a
//! log (`acc_0190...` is an account). The body is a UUIDv7 in hex, so ids sort
//! by creation time.

use crate::error::{Error, Result};
use std::fmt;

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A new, unique, time-ordered id.
            pub fn generate() -> Self {
                Self(format!("{}_{}", $prefix, uuid::Uuid::now_v7().simple()))
            }

            /// Parses an id, checking its prefix and body. `field` names the
            /// input in the error.
            pub fn parse(field: &str, value: &str) -> Result<Self> {
                if is_valid_id(value, $prefix) {
                    Ok(Self(value.to_owned()))
                } else {
                    Err(Error::invalid_field(field, format!("must be a {} id ({}_...)", stringify!($name), $prefix)))
                }
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as owned text.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

fn is_valid_id(value: &str, prefix: &str) -> bool {
    let Some(body) = value
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
    else {
        return false;
    };
    body.len() == 32
        && body
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

define_id!(
    /// A customer account.
    AccountId,
    "acc"
);
define_id!(
    /// A subscription (entitlement) to a plan.
    SubscriptionId,
    "sub"
);
define_id!(
    /// A provisioned resource.
    ResourceId,
    "res"
);
define_id!(
    /// An offer to move resources to another account.
    ClaimId,
    "clm"
);
define_id!(
    /// A recorded marketplace event.
    EventId,
    "evt"
);
define_id!(
    /// An outbox job.
    JobId,
    "job"
);
define_id!(
    /// An invoice.
    InvoiceId,
    "inv"
);
define_id!(
    /// A usage report sent to a marketplace.
    ReportId,
    "rpt"
);
define_id!(
    /// An entry of the operators' audit log.
    AuditId,
    "aud"
);

/// Declares newtypes over the text of an id we do not mint (a marketplace's
/// own id, a catalog name): typed in signatures, stored and sent verbatim.
/// Checking the text is the caller's job where it comes in. The calling
/// crate needs `serde`.
#[macro_export]
macro_rules! text_id {
    ($($(#[$doc:meta])* $name:ident;)+) => {$(
        $(#[$doc])*
        #[derive(
            Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord,
            ::serde::Serialize, ::serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps the text of an id.
            pub fn new(text: impl Into<String>) -> Self {
                Self(text.into())
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as owned text.
            pub fn into_string(self) -> String {
                self.0
            }

            /// True for an empty id (none given).
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    )+};
}

text_id! {
    /// A marketplace's own id of something (a Vercel installation or
    /// resource, a Google procurement account or entitlement), verbatim.
    ExternalId;
    /// A product of the catalog.
    ProductId;
    /// A plan of the catalog.
    PlanId;
    /// A metric of the catalog.
    MetricId;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_sort_by_time() {
        let first = AccountId::generate();
        let second = AccountId::generate();
        assert!(first.as_str().starts_with("acc_"));
        assert_eq!(AccountId::parse("id", first.as_str()).unwrap(), first);
        assert!(first < second);
    }

    #[test]
    fn wrong_prefix_or_body_is_rejected() {
        let resource = ResourceId::generate();
        let error = AccountId::parse("accountId", resource.as_str()).unwrap_err();
        assert_eq!(error.fields()[0].field, "accountId");
        assert!(AccountId::parse("id", "acc_xyz").is_err());
        assert!(AccountId::parse("id", "acc_0190F8A0B1C2D3E4F5A6B7C8D9E0F1A2").is_err());
        assert!(AccountId::parse("id", "").is_err());
    }
}
