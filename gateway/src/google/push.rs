//! Pub/Sub push deliveries: verify, decode, record, acknowledge.

use crate::error::generic_error_response;
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use marketbridge_core::Error;
use marketbridge_core::time::to_timestamp;
use marketbridge_google::notification::decode_push_body;
use marketbridge_proto::account::v1::RecordMarketplaceEventRequest;
use marketbridge_proto::common::v1::Marketplace;
use serde_json::json;

/// Channel name of pushed notifications.
pub const PUSH_CHANNEL: &str = "pubsub_push";

/// `POST {push_path}`: answers 200 once the notification is recorded (a
/// duplicate too); 401/403 for a bad token, 400 for a bad envelope.
#[utoipa::path(
    operation_id = "google_push_receive",
    post,
    path = "/google/pubsub",
    tag = "google",
    request_body(content = crate::openapi::doc::PushEnvelope, content_type = "application/json"),
    responses(
        (status = 200, description = "Recorded (`duplicate` when seen before); Pub/Sub stops redelivering", body = crate::openapi::doc::PushRecorded),
        crate::openapi::doc::GenericErrors
    ),
    security(("google_push" = []))
)]
pub async fn receive(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(verifier) = state.google.adapter().and_then(|a| a.push.as_ref()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(rejected) = verifier.verify_header(authorization).await {
        tracing::warn!(reason = rejected.reason.as_str(), error = %rejected, "pub/sub push refused");
        return generic_error_response(&Error::from(rejected));
    }
    let (envelope, decoded) = match decode_push_body(&body) {
        Ok(decoded) => decoded,
        Err(error) => {
            tracing::warn!(error = %error, "malformed pub/sub push refused");
            return generic_error_response(&error);
        }
    };
    let recorded = state
        .accounts
        .record_marketplace_event(RecordMarketplaceEventRequest {
            marketplace: Marketplace::Google as i32,
            external_id: decoded.event_id.clone(),
            event_type: decoded.event_type.clone(),
            payload_json: decoded.payload_json.clone(),
            occurred_at: decoded.published_at.map(to_timestamp),
            channel: PUSH_CHANNEL.to_owned(),
        })
        .await;
    match recorded {
        Ok(answer) => {
            tracing::info!(
                event.external_id = %decoded.event_id,
                event.type = %decoded.event_type,
                message.id = envelope.message.id().unwrap_or_default(),
                duplicate = answer.duplicate,
                "google notification recorded"
            );
            (
                StatusCode::OK,
                Json(json!({"recorded": true, "duplicate": answer.duplicate})),
            )
                .into_response()
        }
        Err(error) => {
            tracing::warn!(event.external_id = %decoded.event_id, error = %error, "google notification not recorded; pub/sub will redeliver");
            generic_error_response(&error)
        }
    }
}
