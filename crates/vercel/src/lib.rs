//! Everything about the Vercel Marketplace's wire contract, in one place:
//! the JSON shapes of the partner API and of the Vercel API, token
//! verification, webhook signatures, and the client of the Vercel API.
//!
//! Architecture invariant: no business logic; the services and the gateway
//! decide, this crate only speaks Vercel.

pub mod api;
