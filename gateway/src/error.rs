//! Errors as HTTP responses. Each marketplace adapter renders its own error
//! body; this is the generic one for routes that belong to none.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use marketbridge_core::{Error, ErrorCode};
use serde_json::json;

/// The HTTP status of an error.
pub fn status_of(error: &Error) -> StatusCode {
    StatusCode::from_u16(error.code().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The message safe to send. Failures on our side (internal errors, a
/// service or a marketplace not answering, a deadline passed) are logged
/// and answered with a fixed sentence per kind, never their own text, which
/// may carry what a database or an upstream said. Every other error (the
/// caller's: validation, not found, conflict, ...) keeps its message.
pub fn public_message(error: &Error) -> String {
    match error.code() {
        ErrorCode::Internal => {
            tracing::error!(error = %error, "internal error");
            "internal error".to_owned()
        }
        ErrorCode::Unavailable => {
            tracing::warn!(error = %error, "a dependency is unavailable");
            "a service is unavailable; retry later".to_owned()
        }
        ErrorCode::Timeout => {
            tracing::warn!(error = %error, "the request timed out");
            "the request did not finish in time".to_owned()
        }
        _ => error.message().to_owned(),
    }
}

/// The message for people an error may carry, when it is safe to send:
/// never for the failures [`public_message`] hides.
pub fn public_user_message(error: &Error) -> Option<&str> {
    if is_hidden(error.code()) {
        None
    } else {
        error.user_message()
    }
}

/// True for the codes whose details are logged, not answered.
pub fn is_hidden(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Internal | ErrorCode::Unavailable | ErrorCode::Timeout
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_on_our_side_never_show_their_text() {
        let database = "duplicate key value violates unique constraint \"accounts_pkey\"";
        for code in [
            ErrorCode::Internal,
            ErrorCode::Unavailable,
            ErrorCode::Timeout,
        ] {
            let error = Error::new(code, database).with_user_message(database);
            assert!(!public_message(&error).contains("duplicate"), "{code:?}");
            assert_eq!(public_user_message(&error), None, "{code:?}");
        }
        for code in [
            ErrorCode::Validation,
            ErrorCode::NotFound,
            ErrorCode::Conflict,
        ] {
            let error = Error::new(code, "the caller's problem").with_user_message("Fix it");
            assert_eq!(public_message(&error), "the caller's problem");
            assert_eq!(public_user_message(&error), Some("Fix it"));
        }
    }
}
