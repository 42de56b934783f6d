//! Errors as HTTP responses. Each marketplace adapter renders its own error
//! body; this is the generic one for routes that belong to none.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use marketbridge_core::Error;
use serde_json::json;

/// The HTTP status of an error.
pub fn status_of(error: &Error) -> StatusCode {
    StatusCode::from_u16(error.code().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The message safe to send: internal errors are logged, not shown.
pub fn public_message(error: &Error) -> String {
    if error.code() == marketbridge_core::ErrorCode::Internal {
        tracing::error!(error = %error, "internal error");
        "internal error".to_owned()
    } else {
        error.message().to_owned()
    }
}

/// `{"error":{"code","message"}}` with the error's status.
pub fn generic_error_response(error: &Error) -> Response {
    let body = json!({"error": {"code": error.code().as_str(), "message": public_message(error)}});
    (status_of(error), Json(body)).into_response()
}

/// Answers a body over the gateway's limit (the 413 axum's body extractors
/// answer in plain text) with the error body every adapter's shape accepts:
/// `{"error":{"code":"payload_too_large","message"}}`.
pub async fn oversized_body_as_error(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE || is_json {
        return response;
    }
    let body = json!({"error": {
        "code": "payload_too_large",
        "message": "the request body is larger than the gateway accepts (1 MiB)",
    }});
    (StatusCode::PAYLOAD_TOO_LARGE, Json(body)).into_response()
}
