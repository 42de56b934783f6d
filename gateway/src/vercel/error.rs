//! Errors as the partner API's error body:
//! `{"error":{"code","message","user"?,"fields"?}}`. Only 400 answers carry
//! `fields`; internal failures are logged and answered without detail. The
//! simplified flow answers its own body, `{"error":{"code","message",
//! "details"?}}` ([`FlowFailure`]).

use crate::error::{is_hidden, public_message, public_user_message, status_of};
use axum::Json;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use marketbridge_core::{Error, ErrorCode};
use marketbridge_vercel::model::error::{ErrorBody, ErrorDetail, FieldProblem, UserMessage};
use marketbridge_vercel::model::flow::{FlowError, FlowErrorBody};

/// An error answered with the partner API's error body.
#[derive(Debug)]
pub struct VercelError(pub Error);

/// What partner API handlers return.
pub type Answer = Result<Response, VercelError>;

impl From<Error> for VercelError {
    fn from(error: Error) -> Self {
        Self(error)
    }
}

/// The error body of `error`.
pub fn error_body(error: &Error) -> ErrorBody {
    let fields = (error.code() == ErrorCode::Validation && !error.fields().is_empty()).then(|| {
        error
            .fields()
            .iter()
            .map(|field| FieldProblem {
                key: field.field.clone(),
                message: (!field.message.is_empty()).then(|| field.message.clone()),
            })
            .collect()
    });
    ErrorBody {
        error: ErrorDetail {
            code: error.code().as_str().to_owned(),
            message: public_message(error),
            user: public_user_message(error).map(|message| UserMessage {
                message: message.to_owned(),
                url: None,
            }),
            fields,
        },
    }
}

/// The HTTP answer of `error`.
pub fn error_response(error: &Error) -> Response {
    let mut response = (status_of(error), Json(error_body(error))).into_response();
    if error.code() == ErrorCode::Unauthenticated {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

impl IntoResponse for VercelError {
    fn into_response(self) -> Response {
        error_response(&self.0)
    }
}

/// An error answered with the simplified flow's error body.
#[derive(Debug)]
pub struct FlowFailure(pub Error);

/// What flow handlers return.
pub type FlowAnswer = Result<Response, FlowFailure>;

impl From<Error> for FlowFailure {
    fn from(error: Error) -> Self {
        Self(error)
    }
}

/// The flow's error body of `error`: `details` lists the fields, or else
/// carries the message for people; neither for failures on our side.
pub fn flow_error_body(error: &Error) -> FlowErrorBody {
    let details = if is_hidden(error.code()) {
        None
    } else if !error.fields().is_empty() {
        Some(
            error
                .fields()
                .iter()
                .map(|f| format!("{}: {}", f.field, f.message))
                .collect::<Vec<_>>()
                .join("; "),
        )
    } else {
        public_user_message(error).map(str::to_owned)
    };
    FlowErrorBody {
        error: FlowError {
            code: error.code().as_str().to_uppercase(),
            message: public_message(error),
            details,
        },
    }
}

impl IntoResponse for FlowFailure {
    fn into_response(self) -> Response {
        (status_of(&self.0), Json(flow_error_body(&self.0))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATABASE_TEXT: &str =
        "error returned from database: duplicate key value violates unique constraint";

    #[test]
    fn failures_on_our_side_reach_vercel_without_their_text() {
        for code in [
            ErrorCode::Internal,
            ErrorCode::Unavailable,
            ErrorCode::Timeout,
        ] {
            let error = Error::new(code, DATABASE_TEXT).with_user_message(DATABASE_TEXT);
            let partner = serde_json::to_string(&error_body(&error)).unwrap();
            let flow = serde_json::to_string(&flow_error_body(&error)).unwrap();
            for body in [partner, flow] {
                assert!(!body.contains("database"), "{code:?}: {body}");
            }
        }
    }

    #[test]
    fn the_callers_errors_keep_their_messages_and_fields() {
        let error = Error::invalid_field("billingPlanId", "is not a plan")
            .with_user_message("Pick another plan");
        let partner = error_body(&error);
        assert_eq!(partner.error.code, "validation_error");
        assert_eq!(partner.error.fields.unwrap()[0].key, "billingPlanId");
        assert_eq!(partner.error.user.unwrap().message, "Pick another plan");
        let flow = flow_error_body(&error);
        assert_eq!(flow.error.code, "VALIDATION_ERROR");
        assert_eq!(
            flow.error.details.as_deref(),
            Some("billingPlanId: is not a plan")
        );
        let conflict = Error::conflict("the installation's plan belongs to another product");
        assert_eq!(error_body(&conflict).error.message, conflict.message());
    }
}
