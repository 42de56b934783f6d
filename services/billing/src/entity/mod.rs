//! Tables the billing service owns.

pub mod billing_resource;
pub mod billing_subscription;
pub mod plan_period;
pub mod usage_event;
pub mod usage_window;
