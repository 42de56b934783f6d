//! EventBridge deliveries through an API destination: the connection's API
//! key, then the event recorded (deduplicated on its `id`).

use crate::error::generic_error_response;
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use marketbridge_aws::events::Envelope;
use marketbridge_core::Error;
use marketbridge_core::time::{parse_rfc3339, to_timestamp};
use marketbridge_proto::account::v1::RecordMarketplaceEventRequest;
use marketbridge_proto::common::v1::Marketplace;
use serde_json::json;
use subtle::ConstantTimeEq;

/// Channel name of EventBridge deliveries.
pub const EVENTBRIDGE_CHANNEL: &str = "eventbridge";

/// `POST {events_path}`: 200 once recorded (a duplicate too); 401 without
/// the API key, 400 for a body that is no Marketplace event.
#[utoipa::path(
    operation_id = "aws_events_receive",
    post,
    path = "/aws/events",
    tag = "aws",
    request_body(content = String, content_type = "application/json", description = "An EventBridge event of `aws.agreement-marketplace`"),
    responses(
        (status = 200, description = "Recorded (`duplicate` when seen before)"),
        crate::openapi::doc::GenericErrors
    )
)]
pub async fn receive(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(adapter) = state.aws.adapter() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(expected) = adapter.event_key.as_ref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let presented = headers
        .get(adapter.event_key_header.as_str())
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let matches: bool = presented.ct_eq(expected.expose().as_bytes()).into();
    if !matches {
        tracing::warn!("eventbridge delivery without the connection's api key refused");
        return generic_error_response(&Error::unauthenticated("the API key is missing or wrong"));
    }
    let Some(envelope) = Envelope::parse(&body) else {
        tracing::warn!("a body that is no aws marketplace event refused");
        return generic_error_response(&Error::validation(
            "the body is not an AWS Marketplace EventBridge event",
        ));
    };
    let payload = String::from_utf8_lossy(&body).into_owned();
    let recorded = state
        .accounts
        .record_marketplace_event(RecordMarketplaceEventRequest {
            marketplace: Marketplace::Aws as i32,
            external_id: envelope.id.clone(),
            event_type: envelope.kind().to_owned(),
            payload_json: payload,
            occurred_at: parse_rfc3339("time", &envelope.time).ok().map(to_timestamp),
            channel: EVENTBRIDGE_CHANNEL.to_owned(),
        })
        .await;
    match recorded {
        Ok(answer) => {
            tracing::info!(event.external_id = %envelope.id, event.type = %envelope.detail_type, duplicate = answer.duplicate, "aws event recorded");
            (
                StatusCode::OK,
                Json(json!({"recorded": true, "duplicate": answer.duplicate})),
            )
                .into_response()
        }
        Err(error) => {
            tracing::warn!(event.external_id = %envelope.id, error = %error, "aws event not recorded; eventbridge will retry");
            generic_error_response(&error)
        }
    }
}
