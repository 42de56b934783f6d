//! Errors as the partner API's error body:
//! `{"error":{"code","message","user"?,"fields"?}}`. Only 400 answers carry
//! `fields`; internal failures are logged and answered without detail.

use crate::error::{public_message, status_of};
use axum::Json;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use marketbridge_core::{Error, ErrorCode};
use marketbridge_vercel::model::error::{ErrorBody, ErrorDetail, FieldProblem, UserMessage};

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

impl From<tonic::Status> for VercelError {
    fn from(status: tonic::Status) -> Self {
        Self(Error::from(status))
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
            user: error.user_message().map(|message| UserMessage {
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
