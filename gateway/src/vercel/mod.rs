//! The Vercel Marketplace adapter: the partner API Vercel calls (under
//! `vercel.base_path`), webhooks, SSO with a small provider page, and the
//! simplified `/marketplace/...` flow. Every call is verified here and
//! carried out by the services over gRPC.
//!
//! | route (below the base path) | file |
//! |---|---|
//! | `/v1/installations/{id}` PUT, GET, PATCH, DELETE | [`installations`] |
//! | `/v1/products/{slug}/plans`, `.../plans` | [`plans`] |
//! | `/v1/installations/{id}/resources...` | [`resources`] |
//! | `/v1/installations/{id}/resources/{rid}/repl` | [`resources`] |
//! | `/v1/installations/{id}/resource-transfer-requests...` | [`transfers`] |
//! | `/v1/installations/{id}/billing/provision` | [`billing`] |
//! | `/webhook` | [`webhook`] |
//! | `/sso`, `/dashboard/...` | [`sso`], [`dashboard`] |
//! | `/import` (the Import Resource URL) | [`import`] |
//! | `/marketplace/...` | [`flow`] |

pub mod auth;
pub mod billing;
pub mod body;
pub mod cache;
pub mod convert;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod flow;
pub mod import;
pub mod installations;
pub mod operations;
pub mod pages;
pub mod plans;
pub mod resources;
pub mod session;
pub mod sso;
pub mod state;
pub mod transfers;
pub mod webhook;

use crate::openapi::doc::prefixed;
use crate::state::AppState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use state::{VercelState, base_path};

/// The Vercel routes, each below the base path, with their documentation.
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let base = state.vercel.base_path.as_str();
    let at = |routes| prefixed(base, routes);
    OpenApiRouter::new()
        .routes(at(routes!(
            installations::upsert,
            installations::get,
            installations::update,
            installations::delete
        )))
        .routes(at(routes!(plans::product_plans)))
        .routes(at(routes!(plans::installation_plans)))
        .routes(at(routes!(resources::provision, resources::list)))
        .routes(at(routes!(
            resources::get,
            resources::update,
            resources::delete
        )))
        .routes(at(routes!(plans::resource_plans)))
        .routes(at(routes!(resources::rotate_secrets)))
        .routes(at(routes!(resources::repl)))
        .routes(at(routes!(transfers::create)))
        .routes(at(routes!(transfers::create_with_id)))
        .routes(at(routes!(transfers::verify)))
        .routes(at(routes!(transfers::accept)))
        .routes(at(routes!(billing::provision_purchase)))
        .routes(at(routes!(webhook::receive)))
        .routes(at(routes!(sso::redirect_login)))
        .routes(at(routes!(sso::confirm)))
        .routes(at(routes!(dashboard::installation_page)))
        .routes(at(routes!(dashboard::resource_page)))
        .routes(at(routes!(dashboard::invoice_page)))
        .routes(at(routes!(import::import_page, import::import_submit)))
        .routes(at(routes!(flow::account)))
        .routes(at(routes!(flow::plans)))
        .routes(at(routes!(flow::create_resource)))
        .routes(at(routes!(flow::get_resource, flow::delete_resource)))
        .routes(at(routes!(flow::connect)))
        .routes(at(routes!(flow::change_plan)))
}
