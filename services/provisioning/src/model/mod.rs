//! The provisioning service's vocabulary: the states stored on its rows,
//! the ids it passes around and its outbox jobs. Every other module builds on
//! these; this module imports nothing else of the crate.
//!
//! States are stored as the same strings as always (`active`, `ready`, ...);
//! a stored value no variant names is an error when the row is read, never a
//! default.

pub mod ids;
pub mod job;
pub mod state;

pub use ids::{ExternalId, ImportableId, MetricId, PlanId, ProductId, TransferClaimId, stored_id};
pub use job::{
    BillingChangeJob, PendingRotation, PlanChangeJob, ProvisioningJob, ResourceJob,
    SubscriptionAsOf, SubscriptionJob,
};
pub use state::{
    ClaimState, ImportSource, Ownership, ResourceStatus, SubscriptionScope, SubscriptionState,
};
