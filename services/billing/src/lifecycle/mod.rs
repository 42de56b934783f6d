//! The billing lifecycles as pure functions: a usage report's delivery
//! ([`report`]), an invoice's states ([`invoice`]) and an account's closing
//! ([`closing`]). Each is `(state, event) -> Result<(new state, effects),
//! refusal>`; the domain reads the rows, asks the lifecycle, and applies the
//! effects (rows, jobs, calls) in one place. Nothing here touches a
//! database or the network, so every transition is tested in a table.
//!
//! States are stored as text (the same strings as before): each enum has
//! `as_str` and `FromStr`, and a stored value no enum knows is an error.

pub mod closing;
pub mod invoice;
pub mod report;

use std::fmt;

/// A stored or received state no enum knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownValue {
    /// What it should have been (`invoice state`).
    pub what: &'static str,
    /// The text found.
    pub value: String,
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} `{}`", self.what, self.value)
    }
}

impl std::error::Error for UnknownValue {}

impl From<UnknownValue> for marketbridge_core::Error {
    fn from(unknown: UnknownValue) -> Self {
        marketbridge_core::Error::internal(format!("an unknown {} was found", unknown.what))
            .with_source(unknown)
    }
}

/// Declares a state enum stored as text: `as_str`, `ALL`, `Display` and
/// `FromStr` (an unknown text is an [`UnknownValue`]).
macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored text.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::lifecycle::UnknownValue;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($text => Ok($name::$variant),)+
                    other => Err($crate::lifecycle::UnknownValue {
                        what: $what,
                        value: other.to_owned(),
                    }),
                }
            }
        }
    };
}

pub(crate) use text_enum;
