//! The partner API's error body:
//! `{"error":{"code","message","user"?:{"message","url"?},"fields"?:[{"key","message"?}]}}`.

use serde::{Deserialize, Serialize};

/// The body of every 4xx and 5xx answer of the partner API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable code (`validation_error`, `not_found`, `conflict`, ...).
    pub code: String,
    /// Message for developers.
    pub message: String,
    /// Message the dashboard shows the customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserMessage>,
    /// Invalid fields (400 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<FieldProblem>>,
}

/// A message for the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserMessage {
    /// Text.
    pub message: String,
    /// Where to learn more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// One invalid input field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldProblem {
    /// The field as the caller named it (`metadata.region`).
    pub key: String,
    /// What is wrong with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
