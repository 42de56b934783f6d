//! Simulators of the marketplaces marketbridge integrates with. Each plays
//! its marketplace over real HTTP with the exact wire contract: its own
//! signing keys and JWKS, the calls the marketplace makes to us, and the API
//! the marketplace serves to us, which records what it receives and can fail
//! on demand. Tests drive them; `marketbridge sim ...` runs them for demos.

pub mod aws;
pub mod azure;
pub mod common;
pub mod google;
pub mod vercel;
