//! A refusal of the fake Vercel API, answered as Vercel does:
//! `{"error":{"code","message"}}` with the status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A refusal, answered as `{"error":{"code","message"}}`.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

/// A refusal with `status`, `code` and `message`.
pub(crate) fn refusal(status: StatusCode, code: &'static str, message: &str) -> Refusal {
    Refusal {
        status,
        code,
        message: message.to_owned(),
    }
}

/// `404 not_found`.
pub(crate) fn not_found(message: &str) -> Refusal {
    refusal(StatusCode::NOT_FOUND, "not_found", message)
}

/// `410 gone`: the installation no longer exists.
pub(crate) fn gone() -> Refusal {
    refusal(
        StatusCode::GONE,
        "gone",
        "the installation no longer exists",
    )
}
