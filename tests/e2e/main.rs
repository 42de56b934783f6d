//! End-to-end tests over the whole set: real gRPC and HTTP over loopback,
//! real SQLite and PostgreSQL, marketplaces played by the simulators.

mod support;

mod billing;
mod billing_closing;
mod billing_google;
mod billing_vercel;
mod console;
mod docs;
mod drivers_plugin;
mod drivers_postgres;
mod drivers_support;
mod foundation;
mod fuzz;
mod google_auth;
mod google_contract;
mod google_deadlines;
mod google_events;
mod google_lifecycle;
mod google_stream;
mod google_support;
mod grpcurl;
mod keys;
mod kubernetes;
mod limits;
mod openapi;
mod processes;
mod replicas;
mod security_at_rest;
mod security_edge;
mod security_grpc;
mod tls;
mod vercel_auth;
mod vercel_billing;
mod vercel_demo;
mod vercel_flow;
mod vercel_idempotency;
mod vercel_import;
mod vercel_input;
mod vercel_outage;
mod vercel_seed_flow;
mod vercel_sso;
mod vercel_support;
mod vercel_trace;
mod vercel_transfers;
mod vercel_webhooks;
