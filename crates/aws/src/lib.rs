//! Everything about AWS Marketplace's SaaS wire contract, in one place: the
//! Metering (`ResolveCustomer`, `BatchMeterUsage`) and Entitlement
//! (`GetEntitlements`) APIs over AWS JSON 1.1 signed with SigV4, EventBridge
//! agreement and license events, and legacy SNS notifications with their
//! signature verification.
//!
//! Architecture invariant: no business logic; the services and the gateway
//! decide, this crate only speaks AWS.

pub mod client;
pub mod credentials;
pub mod entitlement;
pub mod error;
pub mod events;
pub mod metering;
pub mod sigv4;
pub mod sns;

pub use client::MarketplaceClient;
pub use credentials::AwsCredentials;
pub use error::CallError;

/// The SigV4 service name of every AWS Marketplace API.
pub const SIGNING_SERVICE: &str = "aws-marketplace";
/// Content type of AWS JSON 1.1.
pub const JSON_1_1: &str = "application/x-amz-json-1.1";
