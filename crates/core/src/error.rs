//! One error type for every hop. An [`ErrorCode`] maps to both a gRPC code and
//! an HTTP status, so an error means the same thing in a service, on the wire
//! between services, and in the body a marketplace receives.

use marketbridge_proto::common::v1::{ErrorDetail, FieldViolation};
use prost::Message;
use std::fmt;
use std::sync::Arc;

/// gRPC metadata key carrying an encoded [`ErrorDetail`] on every non-OK status.
pub const ERROR_DETAIL_METADATA_KEY: &str = "marketbridge-error-bin";

/// What went wrong, in terms every hop understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The input is invalid; `fields` says which parts.
    Validation,
    /// No valid credentials were presented.
    Unauthenticated,
    /// The caller may not do this.
    PermissionDenied,
    /// The thing named does not exist.
    NotFound,
    /// The request conflicts with the current state.
    Conflict,
    /// An idempotency key was reused with a different request.
    IdempotencyKeyReused,
    /// The request is well-formed but cannot be carried out (an unpaid invoice).
    Unprocessable,
    /// Too many requests; retry later.
    RateLimited,
    /// A dependency (a service, a marketplace) is not answering; retry later.
    Unavailable,
    /// The deadline passed before the work finished.
    Timeout,
    /// A bug or an unexpected failure on our side.
    Internal,
}

impl ErrorCode {
    /// Every code, for tables and tests.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::Validation,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::Unprocessable,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::Timeout,
        ErrorCode::Internal,
    ];

    /// The stable snake_case name used in error bodies and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Validation => "validation_error",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::Unprocessable => "unprocessable",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal_error",
        }
    }

    /// Parses the name produced by [`ErrorCode::as_str`].
    pub fn parse(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str() == name)
    }

    /// The gRPC status code for this error.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorCode::Validation => tonic::Code::InvalidArgument,
            ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::Conflict => tonic::Code::FailedPrecondition,
            ErrorCode::IdempotencyKeyReused => tonic::Code::AlreadyExists,
            ErrorCode::Unprocessable => tonic::Code::FailedPrecondition,
            ErrorCode::RateLimited => tonic::Code::ResourceExhausted,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::Timeout => tonic::Code::DeadlineExceeded,
            ErrorCode::Internal => tonic::Code::Internal,
        }
    }

    /// The HTTP status for this error.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Validation => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::IdempotencyKeyReused => 422,
            ErrorCode::Unprocessable => 422,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Timeout => 504,
            ErrorCode::Internal => 500,
        }
    }

    /// The closest code for a gRPC status that carried no detail.
    pub fn from_grpc(code: tonic::Code) -> ErrorCode {
        match code {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => ErrorCode::Validation,
            tonic::Code::Unauthenticated => ErrorCode::Unauthenticated,
            tonic::Code::PermissionDenied => ErrorCode::PermissionDenied,
            tonic::Code::NotFound => ErrorCode::NotFound,
            tonic::Code::FailedPrecondition | tonic::Code::Aborted => ErrorCode::Conflict,
            tonic::Code::AlreadyExists => ErrorCode::Conflict,
            tonic::Code::ResourceExhausted => ErrorCode::RateLimited,
            tonic::Code::Unavailable => ErrorCode::Unavailable,
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => ErrorCode::Timeout,
            _ => ErrorCode::Internal,
        }
    }

    /// True when retrying the same call later may succeed.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited | ErrorCode::Unavailable | ErrorCode::Timeout
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One invalid input field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field path as the caller named it.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// An error with a code, a message for developers, an optional message for
/// customers, the invalid fields of a validation error, and the error that
/// caused it (kept for logs and `source()`, never sent to a caller).
#[derive(Debug, Clone)]
pub struct Error {
    code: ErrorCode,
    message: String,
    user_message: Option<String>,
    fields: Vec<FieldError>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// Two errors are equal when they say the same to a caller; their causes are
/// not compared.
impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code
            && self.message == other.message
            && self.user_message == other.user_message
            && self.fields == other.fields
    }
}

impl Eq for Error {}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            user_message: None,
            fields: Vec::new(),
            source: None,
        }
    }

    /// A validation error on one field.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field_error = FieldError {
            field: field.into(),
            message: message.into(),
        };
        let message = format!("invalid {}: {}", field_error.field, field_error.message);
        Self {
            code: ErrorCode::Validation,
            message,
            user_message: None,
            fields: vec![field_error],
            source: None,
        }
    }

    /// A validation error without a single field to blame.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Validation, message)
    }

    /// The thing named does not exist.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, what)
    }

    /// The request conflicts with the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// The request is well-formed but cannot be carried out.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unprocessable, message)
    }

    /// A dependency is not answering.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// An unexpected failure on our side.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// The caller is not authenticated.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }

    /// The caller may not do this.
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PermissionDenied, message)
    }

    /// Keeps the error that caused this one. It stays in this process: logs
    /// and [`Error::chain`] show it, callers over the network never see it.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// The message followed by every cause (`message: cause: cause`), for
    /// logs.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(error) = cause {
            text.push_str(": ");
            text.push_str(&error.to_string());
            cause = error.source();
        }
        text
    }

    /// Adds a message to show the customer.
    pub fn with_user_message(mut self, message: impl Into<String>) -> Self {
        self.user_message = Some(message.into());
        self
    }

    /// Adds an invalid field.
    pub fn with_field(mut self, field: impl Into<String>, message: impl Into<String>) -> Self {
        self.fields.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
        self
    }

    /// What went wrong.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message for developers.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The message for customers, if one was set.
    pub fn user_message(&self) -> Option<&str> {
        self.user_message.as_deref()
    }

    /// The invalid fields of a validation error.
    pub fn fields(&self) -> &[FieldError] {
        &self.fields
    }

    /// The error as the protobuf detail carried between services.
    pub fn to_detail(&self) -> ErrorDetail {
        ErrorDetail {
            code: self.code.as_str().to_owned(),
            message: self.message.clone(),
            user_message: self.user_message.clone().unwrap_or_default(),
            fields: self
                .fields
                .iter()
                .map(|f| FieldViolation {
                    field: f.field.clone(),
                    description: f.message.clone(),
                })
                .collect(),
        }
    }

    /// Rebuilds an error from its protobuf detail, falling back to `fallback`
    /// for an unknown code.
    pub fn from_detail(detail: ErrorDetail, fallback: ErrorCode) -> Self {
        Self {
            code: ErrorCode::parse(&detail.code).unwrap_or(fallback),
            message: detail.message,
            user_message: (!detail.user_message.is_empty()).then_some(detail.user_message),
            fields: detail
                .fields
                .into_iter()
                .map(|f| FieldError {
                    field: f.field,
                    message: f.description,
                })
                .collect(),
            source: None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

/// Most invalid fields an error carries on the wire; the rest are counted in
/// its message. Headers must stay small: a validation error naming every
/// event of a large batch would otherwise not fit the HTTP/2 header limits,
/// and the caller would get a transport error instead of the answer.
const MAX_WIRE_FIELDS: usize = 50;
/// Longest message, field name or field message carried on the wire, in bytes.
const MAX_WIRE_TEXT: usize = 1024;

fn wire_text(text: &str) -> String {
    if text.len() <= MAX_WIRE_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_WIRE_TEXT - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

impl Error {
    /// The error as it travels: at most [`MAX_WIRE_FIELDS`] fields, each
    /// text at most [`MAX_WIRE_TEXT`] bytes, the fields left out counted in
    /// the message.
    fn for_the_wire(&self) -> ErrorDetail {
        let mut detail = self.to_detail();
        let left_out = detail.fields.len().saturating_sub(MAX_WIRE_FIELDS);
        detail.fields.truncate(MAX_WIRE_FIELDS);
        for field in &mut detail.fields {
            field.field = wire_text(&field.field);
            field.description = wire_text(&field.description);
        }
        detail.message = wire_text(&detail.message);
        if left_out > 0 {
            detail.message = format!("{} ({left_out} more invalid fields)", detail.message);
        }
        detail.user_message = wire_text(&detail.user_message);
        detail
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        let mut metadata = tonic::metadata::MetadataMap::new();
        let wire = error.for_the_wire();
        let message = wire.message.clone();
        let detail = wire.encode_to_vec();
        metadata.insert_bin(
            ERROR_DETAIL_METADATA_KEY,
            tonic::metadata::MetadataValue::from_bytes(&detail),
        );
        tonic::Status::with_metadata(error.code.grpc_code(), message, metadata)
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        let fallback = ErrorCode::from_grpc(status.code());
        let detail = status
            .metadata()
            .get_bin(ERROR_DETAIL_METADATA_KEY)
            .and_then(|value| value.to_bytes().ok())
            .and_then(|bytes| ErrorDetail::decode(bytes).ok());
        match detail {
            Some(detail) => Error::from_detail(detail, fallback),
            None => Error::new(fallback, status.message().to_owned()),
        }
    }
}

/// Collects field errors so a request reports every invalid field at once.
#[derive(Debug, Default)]
pub struct Validator {
    fields: Vec<FieldError>,
}

impl Validator {
    /// An empty validator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an invalid field.
    pub fn invalid(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.fields.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Records `field` as missing when `value` is empty.
    pub fn require(&mut self, field: &str, value: &str) {
        if value.trim().is_empty() {
            self.invalid(field, "is required");
        }
    }

    /// Records `field` as too long when `value` has more than `max` characters.
    pub fn max_len(&mut self, field: &str, value: &str, max: usize) {
        if value.chars().count() > max {
            self.invalid(field, format!("must be at most {max} characters"));
        }
    }

    /// True when nothing was recorded.
    pub fn is_valid(&self) -> bool {
        self.fields.is_empty()
    }

    /// `Ok(())` when nothing was recorded, else one validation error naming
    /// every field.
    pub fn finish(self) -> Result<()> {
        if self.fields.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = self.fields.iter().map(|f| f.field.as_str()).collect();
        let message = format!("invalid input: {}", names.join(", "));
        Err(Error {
            code: ErrorCode::Validation,
            message,
            user_message: None,
            fields: self.fields,
            source: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_name() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
    }

    #[test]
    fn error_survives_a_grpc_status() {
        let error = Error::invalid_field("metadata.region", "unknown region")
            .with_user_message("Pick another region")
            .with_field("name", "is required");
        let status: tonic::Status = error.clone().into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let back: Error = status.into();
        assert_eq!(back, error);
    }

    #[test]
    fn a_large_validation_error_stays_small_on_the_wire() {
        let mut validator = Validator::new();
        for i in 0..1000 {
            validator.invalid(format!("events[{i}].quantity"), "must be positive");
        }
        validator.invalid("x".repeat(5000), "é".repeat(3000));
        let error = validator.finish().unwrap_err();
        let status: tonic::Status = error.into();
        let header_bytes: usize = status
            .metadata()
            .iter()
            .map(|entry| match entry {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => k.as_str().len() + v.len(),
                tonic::metadata::KeyAndValueRef::Binary(k, v) => {
                    k.as_str().len() + v.as_encoded_bytes().len()
                }
            })
            .sum::<usize>()
            + status.message().len();
        assert!(header_bytes < 16 * 1024, "{header_bytes} bytes of headers");
        let back: Error = status.into();
        assert_eq!(back.code(), ErrorCode::Validation);
        assert_eq!(back.fields().len(), MAX_WIRE_FIELDS);
        assert_eq!(back.fields()[0].field, "events[0].quantity");
        assert!(
            back.message().ends_with("(951 more invalid fields)"),
            "{}",
            back.message()
        );
        let long = Error::invalid_field("f", "é".repeat(3000));
        let back: Error = tonic::Status::from(long).into();
        assert!(back.fields()[0].message.len() <= MAX_WIRE_TEXT);
    }

    #[test]
    fn status_without_detail_maps_by_grpc_code() {
        let back: Error = tonic::Status::not_found("nope").into();
        assert_eq!(back.code(), ErrorCode::NotFound);
        assert_eq!(back.message(), "nope");
        let back: Error = tonic::Status::unknown("boom").into();
        assert_eq!(back.code(), ErrorCode::Internal);
    }

    #[test]
    fn validator_reports_every_field() {
        let mut validator = Validator::new();
        validator.require("name", " ");
        validator.require("productId", "redis");
        validator.max_len("title", "abcdef", 3);
        let error = validator.finish().unwrap_err();
        assert_eq!(error.code(), ErrorCode::Validation);
        let fields: Vec<&str> = error.fields().iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["name", "title"]);
        assert_eq!(error.code().http_status(), 400);
    }

    #[test]
    fn a_cause_is_kept_for_logs_and_never_crosses_the_wire() {
        let cause = std::io::Error::other("disk said no");
        let error = Error::conflict("it already exists").with_source(cause);
        assert_eq!(error.chain(), "conflict: it already exists: disk said no");
        assert!(std::error::Error::source(&error).is_some());
        assert_eq!(
            error,
            Error::conflict("it already exists"),
            "causes are not compared"
        );
        let status: tonic::Status = error.into();
        assert_eq!(status.message(), "it already exists");
        let back: Error = status.into();
        assert!(std::error::Error::source(&back).is_none());
        assert_eq!(back.message(), "it already exists");
    }
}
