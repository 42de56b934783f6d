//! End-to-end tests over the whole set: real gRPC and HTTP over loopback,
//! real SQLite and PostgreSQL, marketplaces played by the simulators.

mod support;

mod foundation;
mod vercel_auth;
mod vercel_flow;
mod vercel_input;
mod vercel_support;
