//! Ids billing handles that `marketbridge_core::ids` has no kind for: the
//! marketplaces' own ids (an account's, an invoice's) and the catalog's (a
//! plan's, a metric's). Each is a newtype over the text, so a function says
//! which id it takes; the account, subscription, resource, invoice and
//! report ids are the core's.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id `value` (checked by the caller where it comes in).
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// True for the empty id (an account-level owner, an unknown
            /// marketplace id).
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
    };
}

text_id!(
    /// The marketplace's id of an account (Vercel's installation id,
    /// Google's procurement account id).
    ExternalAccountId
);
text_id!(
    /// The marketplace's id of an invoice.
    MarketplaceInvoiceId
);
text_id!(
    /// A plan of the catalog.
    PlanId
);
text_id!(
    /// A metric of the catalog.
    MetricId
);
text_id!(
    /// Who an invoice is for: a resource, or an account-level subscription.
    OwnerId
);
