//! The Azure Marketplace adapter (SaaS offers): the landing page and the
//! connection webhook.
//!
//! - `GET {azure.landing_path}?token=…`: the portal's "Configure account"
//!   link. The token is percent-decoded once (a `+` stays a `+`) and
//!   resolved by the account service with the Fulfillment API; then a 303 to
//!   `{azure.landing_path}?ticket=…` (our ticket only) shows the shared
//!   signup form ([`crate::signup`]). A token Microsoft refuses gets the
//!   "not valid" page.
//! - `POST {azure.landing_path}/complete`: the submitted form; the account
//!   service records the signup and activates the subscription with
//!   Microsoft through its outbox.
//! - `POST {azure.webhook_path}`: a connection webhook call. Its Entra
//!   token is verified (401 otherwise), the body read leniently and recorded
//!   with the account service (deduplicated on operation id and action)
//!   before the 200; the account service re-reads the operation before
//!   acting and decides plan and seat changes within Microsoft's ten
//!   seconds.

mod landing;
pub mod state;
mod webhook;

use crate::openapi::doc::relocated;
use crate::state::AppState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use state::AzureState;

/// The Azure routes (none when Azure is not configured), at the
/// configured paths.
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let Some(adapter) = state.azure.adapter() else {
        return OpenApiRouter::new();
    };
    OpenApiRouter::new()
        .routes(relocated(&adapter.webhook_path, routes!(webhook::receive)))
        .routes(relocated(&adapter.landing_path, routes!(landing::visit)))
        .routes(relocated(
            &format!("{}/complete", adapter.landing_path),
            routes!(landing::complete),
        ))
}
