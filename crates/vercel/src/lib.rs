//! Everything about the Vercel Marketplace's wire contract, in one place:
//! the JSON shapes of the partner API and of the Vercel API, token
//! verification, webhook signatures, and the client of the Vercel API.
//!
//! Casing follows the contract: partner and Vercel API bodies are camelCase;
//! token claims, installation credentials and the SSO exchange are
//! snake_case. Input shapes are lenient (unknown fields are ignored, optional
//! fields may be absent or null); output shapes leave out what is unset.
//!
//! Architecture invariant: no business logic; the services and the gateway
//! decide, this crate only speaks Vercel.

pub mod api;
pub mod model;
pub mod oidc;
pub mod signature;

pub use api::VercelApi;
pub use oidc::{AuthKind, Claims, OidcVerifier};
