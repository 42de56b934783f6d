//! Everything about Google Cloud Marketplace's wire contract, in one place:
//! Pub/Sub envelopes and notification payloads, token verification (push
//! OIDC and signup JWTs), OAuth access tokens from a service-account key, and
//! the clients of the Partner Procurement, Pub/Sub and Service Control APIs.
//!
//! Architecture invariant: no business logic; the services and the gateway
//! decide, this crate only speaks Google.

pub mod api;
pub mod clients;
pub mod jwks;
pub mod notification;
pub mod procurement;
pub mod pubsub;
pub mod push_auth;
pub mod service_account;
pub mod service_control;
pub mod signup_token;
pub mod token;

pub use clients::GoogleClients;
