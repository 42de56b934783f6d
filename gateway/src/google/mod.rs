//! The Google Cloud Marketplace adapter: Pub/Sub push notifications and the
//! signup page.
//!
//! - `POST {google.push_path}`: a Pub/Sub push delivery. The OIDC bearer
//!   token is verified, the envelope and its base64 `data` decoded, and the
//!   notification recorded with the account service before the 2xx that
//!   acknowledges it. Forged or malformed deliveries get a 4xx.
//! - `POST {google.signup_path}`: Google's browser POST with
//!   `x-gcp-marketplace-token`. The token is verified and the shared signup
//!   form ([`crate::signup`]) is shown; the form carries a ticket we sign
//!   ourselves, never the token.
//! - `GET {google.signup_path}?x-gcp-marketplace-token=…`: the same token in
//!   the query string; once verified, a 303 to `{google.signup_path}?ticket=…`
//!   (our ticket only), which shows the form.
//! - `GET {google.agents_path}/{product}/agent-card.json`: the A2A Agent
//!   Card of a product the catalog lists as an AI agent.
//! - `POST {google.signup_path}/complete`: the submitted form; the account
//!   service records the signup and approves the account with Google.

mod agent;
mod push;
mod signup;
pub mod state;

use crate::openapi::doc::relocated;
use crate::state::AppState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use state::GoogleState;

/// The Google routes (none when Google is not configured), at the
/// configured paths.
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let Some(adapter) = state.google.adapter() else {
        return OpenApiRouter::new();
    };
    let mut router = OpenApiRouter::new();
    if adapter.push.is_some() {
        router = router.routes(relocated(&adapter.push_path, routes!(push::receive)));
    }
    if !adapter.agents.is_empty() {
        router = router.routes(relocated(
            &format!("{}/{{product}}/{}", adapter.agents_path, agent::CARD_FILE),
            routes!(agent::card),
        ));
    }
    if adapter.signup.is_some() {
        router = router
            .routes(relocated(
                &adapter.signup_path,
                routes!(signup::start, signup::visit),
            ))
            .routes(relocated(
                &format!("{}/complete", adapter.signup_path),
                routes!(signup::complete),
            ));
    }
    router
}
