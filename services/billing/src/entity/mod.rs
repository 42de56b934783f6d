//! Tables the billing service owns.

pub mod balance;
pub mod billing_resource;
pub mod billing_subscription;
pub mod invoice;
pub mod plan_period;
pub mod prepayment;
pub mod usage_event;
pub mod usage_window;
