//! Connection webhook calls: verify the Entra token, read the body
//! leniently, record, answer.

use crate::error::generic_error_response;
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use marketbridge_azure::model::Operation;
use marketbridge_core::Error;
use marketbridge_core::time::to_timestamp;
use marketbridge_proto::account::v1::RecordMarketplaceEventRequest;
use marketbridge_proto::common::v1::Marketplace;
use serde_json::json;

/// Channel name of webhook calls.
pub const WEBHOOK_CHANNEL: &str = "webhook";

/// The longest id we take from a webhook body.
const MAX_ID: usize = 128;

fn id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// `POST {webhook_path}`: answers 200 once the call is recorded (a
/// duplicate too); 401 for a missing, forged or expired token, 400 for a
/// body that names no operation.
#[utoipa::path(
    operation_id = "azure_webhook_receive",
    post,
    path = "/webhooks/azure",
    tag = "azure",
    request_body(content = serde_json::Value, description = "The operation (id, subscriptionId, action, ...) with the subscription as it is", content_type = "application/json"),
    responses(
        (status = 200, description = "Recorded (`duplicate` when seen before)", body = serde_json::Value),
        crate::openapi::doc::GenericErrors
    ),
    security(("azure_webhook" = []))
)]
pub async fn receive(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(adapter) = state.azure.adapter() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(rejected) = adapter.verifier.verify_header(authorization).await {
        tracing::warn!(reason = rejected.reason, error = %rejected, "azure webhook call refused");
        return generic_error_response(&Error::from(rejected));
    }
    let operation: Operation = match serde_json::from_slice(&body) {
        Ok(operation) => operation,
        Err(error) => {
            tracing::warn!(error = %error, "unreadable azure webhook body refused");
            return generic_error_response(&Error::validation(
                "the webhook body is not an operation",
            ));
        }
    };
    if !id_ok(&operation.id) || !id_ok(&operation.subscription_id) || !id_ok(&operation.action) {
        return generic_error_response(&Error::validation(
            "the webhook body must name the operation (id), its subscriptionId and its action",
        ));
    }
    let occurred_at = operation
        .time_stamp
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t.trim()).ok())
        .map(|t| to_timestamp(t.with_timezone(&chrono::Utc)));
    let external_id = format!("{}:{}", operation.id, operation.action);
    let recorded = state
        .accounts
        .record_marketplace_event(RecordMarketplaceEventRequest {
            marketplace: Marketplace::Azure as i32,
            external_id: external_id.clone(),
            event_type: operation.action.clone(),
            payload_json: String::from_utf8_lossy(&body).into_owned(),
            occurred_at,
            channel: WEBHOOK_CHANNEL.to_owned(),
        })
        .await;
    match recorded {
        Ok(answer) => {
            tracing::info!(
                event.external_id = %external_id,
                azure.subscription = %operation.subscription_id,
                action = %operation.action,
                duplicate = answer.duplicate,
                "azure webhook call recorded"
            );
            (
                StatusCode::OK,
                Json(json!({"recorded": true, "duplicate": answer.duplicate})),
            )
                .into_response()
        }
        Err(error) => {
            tracing::warn!(event.external_id = %external_id, error = %error, "azure webhook call not recorded; Microsoft will retry");
            generic_error_response(&error)
        }
    }
}
