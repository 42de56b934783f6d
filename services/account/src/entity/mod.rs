//! Tables the account service owns.

pub mod account;
pub mod event;
