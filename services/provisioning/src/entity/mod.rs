//! Tables the provisioning service owns.

pub mod importable;
pub mod resource;
pub mod subscription;
pub mod transfer_claim;
