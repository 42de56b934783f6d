//! The billing service's vocabulary, below everything else in the crate: the
//! ids it types beyond `marketbridge_core::ids` and its one job enum. The
//! states of reports, invoices and closings live with their lifecycles
//! ([`crate::lifecycle`]).

pub mod ids;
pub mod job;
