//! Azure Marketplace (Microsoft commercial marketplace) SaaS offers: the
//! wire contract of `../shared/contracts/azure-marketplace.md`.
//!
//! - `model`: the Fulfillment API v2, webhook and metering JSON (lenient).
//! - `token`: Entra client-credentials tokens, cached; the emulator's
//!   unsigned stand-in.
//! - `api`: every call with its token, API version, request and correlation
//!   ids.
//! - `fulfillment`, `metering`: the two APIs.
//! - `webhook`: verification of the connection webhook's Entra tokens.
//! - `clients`: all of them built from configuration.

pub mod api;
pub mod clients;
pub mod fulfillment;
pub mod metering;
pub mod model;
pub mod token;
pub mod webhook;

pub use clients::AzureClients;

/// The marketplace name in the catalog (`marketplace_plan_ids.azure`).
pub const CATALOG_NAME: &str = "azure";
