//! The A2A Agent Card of every product the catalog lists as an AI agent
//! (`[products.agent]`), served at `{google.agents_path}/{product}/agent-card.json`
//! so the card uploaded to Cloud Storage for Producer Portal and the one
//! marketbridge serves are the same file. The cards are checked when the
//! catalog loads; the gateway does not start with a broken one.

use crate::error::generic_error_response;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use marketbridge_core::Error;

/// The last path segment of a card's URL.
pub const CARD_FILE: &str = "agent-card.json";

/// `GET {agents_path}/{product}/agent-card.json`: the product's card, or a
/// 404 when the product is not an agent.
#[utoipa::path(
    operation_id = "google_agent_card",
    get,
    path = "/google/agents/{product}/agent-card.json",
    tag = "google",
    params(("product" = String, Path, description = "A catalog product listed as an AI agent")),
    responses(
        (status = 200, description = "The product's A2A Agent Card, as uploaded to Cloud Storage for Producer Portal", content_type = "application/json", body = Object),
        crate::openapi::doc::GenericErrors
    )
)]
pub async fn card(State(state): State<AppState>, Path(product): Path<String>) -> Response {
    let Some(card) = state
        .google
        .adapter()
        .and_then(|adapter| adapter.agents.card(&product))
    else {
        return generic_error_response(&Error::not_found(format!(
            "no agent card for product `{product}`"
        )));
    };
    let mut response = card.to_owned().into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}
