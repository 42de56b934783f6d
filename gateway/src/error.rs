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
