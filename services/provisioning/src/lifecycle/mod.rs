//! The state machines of subscriptions and resources, as pure functions
//! from (state, event) to (new state, effects) or a refusal. No database,
//! network or clock here: the domain loads the row, asks the machine and
//! applies the effects (rows, jobs) in one place.

pub mod resource;
pub mod subscription;

use marketbridge_core::Error;

/// Why a machine refuses an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not in this state (`409`).
    Conflict {
        /// For operators and logs.
        message: String,
        /// For the customer, when there is one.
        user_message: Option<&'static str>,
    },
    /// Never for this kind of row (`422`).
    Unprocessable {
        /// For operators and logs.
        message: String,
        /// For the customer, when there is one.
        user_message: Option<&'static str>,
    },
    /// The row is gone as far as the caller is concerned (`404`).
    NotFound(String),
}

impl Refusal {
    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict {
            message: message.into(),
            user_message: None,
        }
    }
}

impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Conflict {
                message,
                user_message,
            } => with_user_message(Error::conflict(message), user_message),
            Refusal::Unprocessable {
                message,
                user_message,
            } => with_user_message(Error::unprocessable(message), user_message),
            Refusal::NotFound(message) => Error::not_found(message),
        }
    }
}

fn with_user_message(error: Error, user_message: Option<&'static str>) -> Error {
    match user_message {
        Some(text) => error.with_user_message(text),
        None => error,
    }
}
