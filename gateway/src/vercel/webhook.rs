//! `POST {base}/webhook`: Vercel's notifications. The signature is checked
//! over the raw body before anything is parsed; the event is then recorded
//! by the account service (deduplicated by its id) and acknowledged only
//! once stored. Processing happens in the background.

use super::body::parse_json;
use super::error::Answer;
use super::operations::record_event;
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use marketbridge_core::time::{from_epoch_millis, to_timestamp};
use marketbridge_core::{Error, Validator};
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::common::v1::Marketplace;
use marketbridge_vercel::model::webhook::WebhookEnvelope;
use marketbridge_vercel::signature::{SIGNATURE_HEADER, verify};
use serde_json::json;

/// The channel recorded with webhook events.
pub const CHANNEL: &str = "webhook";

/// Verifies, records and acknowledges one webhook.
#[utoipa::path(
    operation_id = "webhook_receive",
    post,
    path = "/webhook",
    tag = "vercel-pages",
    request_body(content = marketbridge_vercel::model::webhook::WebhookEnvelope, content_type = "application/json"),
    responses((status = 200, description = "Recorded (`duplicate` when seen before)", body = Object, example = json!({"received": true, "duplicate": false})), crate::openapi::doc::VercelErrors),
    security(("vercel_signature" = []))
)]
pub async fn receive(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Answer {
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !verify(state.vercel.client_secret.expose(), &body, signature) {
        tracing::warn!("vercel webhook refused: bad or missing signature");
        return Err(Error::unauthenticated(
            "the x-vercel-signature header does not match the body",
        )
        .into());
    }
    let envelope: WebhookEnvelope = parse_json(&body)?;
    let mut validator = Validator::new();
    validator.require("id", &envelope.id);
    validator.require("type", &envelope.event_type);
    validator.finish()?;
    let occurred_at = envelope
        .created_at_millis()
        .and_then(from_epoch_millis)
        .map(to_timestamp);
    let duplicate = record_event(
        &state,
        account_pb::RecordMarketplaceEventRequest {
            marketplace: Marketplace::Vercel as i32,
            external_id: envelope.id.clone(),
            event_type: envelope.event_type.clone(),
            payload_json: envelope.payload.to_string(),
            occurred_at,
            channel: CHANNEL.to_owned(),
        },
    )
    .await?;
    tracing::info!(event.external_id = %envelope.id, event.type = %envelope.event_type, duplicate, "vercel webhook recorded");
    Ok(Json(json!({"received": true, "duplicate": duplicate})).into_response())
}
