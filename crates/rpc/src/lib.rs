//! Network plumbing every marketbridge component shares.
//!
//! - [`api`]: the services as Rust traits, called over gRPC or in process.
//! - [`server`]: serve a gRPC service with health, reflection, trace
//!   propagation, metrics, optional (m)TLS and graceful shutdown.
//! - [`auth`]: named gRPC callers with scopes, checked in one layer.
//! - [`secrets`]: the secrets a set runs with, resolved and validated at
//!   start.
//! - [`client`]: channels and typed clients to the services, traced, with
//!   deadlines and optional (m)TLS.
//! - [`http`]: outbound HTTPS clients for marketplace APIs.
//! - [`jwks`]: marketplaces' signing keys, cached, refreshed in the
//!   background and served stale while their endpoint fails.
//! - [`tls`]: certificates and the process-wide crypto provider.

pub mod api;
pub mod auth;
pub mod client;
pub mod http;
pub mod jwks;
pub mod jwt_crypto;
pub mod process;
pub mod secrets;
pub mod server;
pub mod tls;

pub use api::{AccountApi, BillingApi, Deferred, InProcess, ProvisioningApi};
pub use client::{
    AccountClient, BillingClient, ClientCredentials, ProvisioningClient, ServiceClients,
    TracedChannel, channel,
};
pub use server::{ServerSecurity, reply, serve_grpc};
