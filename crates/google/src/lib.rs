//! Everything about Google Cloud Marketplace's wire contract, in one place:
//! Pub/Sub envelopes and notification payloads, token verification (push
//! OIDC and signup JWTs), OAuth access tokens from a service-account key, and
//! the clients of the Partner Procurement, Pub/Sub and Service Control APIs.
//!
//! Architecture invariant: no business logic; the services and the gateway
//! decide, this crate only speaks Google.

pub mod api;
