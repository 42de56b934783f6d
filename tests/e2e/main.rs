//! End-to-end tests over the whole set: real gRPC and HTTP over loopback,
//! real SQLite and PostgreSQL, marketplaces played by the simulators.

mod support;

mod foundation;
mod google_auth;
mod google_events;
mod google_lifecycle;
mod google_stream;
mod google_support;
