//! The vocabulary every marketbridge crate shares: one home each for errors,
//! identifiers, money, time, marketplaces and secrets.
//!
//! Architecture invariant: no I/O here, and nothing specific to one
//! marketplace's wire format.

pub mod crypto;
pub mod error;
pub mod ids;
pub mod marketplace;
pub mod metadata;
pub mod money;
pub mod time;

pub use error::{Error, ErrorCode, FieldError, Result, Validator};
pub use marketplace::Marketplace;
