//! `marketbridge demo <marketplace>`: the whole set on SQLite in a temporary
//! folder next to a marketplace simulator, with a customer's lifecycle walked
//! step by step and printed.

mod aws;
mod azure;
mod google;
mod vercel;

pub use aws::aws;
pub use azure::{azure, simulate as simulate_azure};
pub use google::google;
pub use vercel::{demo_config, run_vercel_demo};
