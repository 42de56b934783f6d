//! The pieces of the OpenAPI document that handlers name in their
//! `#[utoipa::path]` declarations: the security schemes, the error
//! responses of each error body, the request and answer bodies that have no
//! model elsewhere, and the path rewriting of configured paths
//! ([`prefixed`], [`relocated`]). It names no handler module, so every
//! adapter can use it; [`super`] assembles the router and the document.

use std::collections::BTreeMap;
use utoipa::ToSchema;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa_axum::router::UtoipaMethodRouter;

/// Security scheme: a Vercel OIDC token (`Authorization: Bearer`), with
/// `X-Vercel-Auth: user|system` naming its kind.
pub const VERCEL_OIDC: &str = "vercel_oidc";
/// Security scheme: the `X-Vercel-Auth` header.
pub const VERCEL_AUTH_STYLE: &str = "vercel_auth_style";
/// Security scheme: the webhook's `x-vercel-signature` (HMAC-SHA1 of the
/// body with the integration secret).
pub const VERCEL_SIGNATURE: &str = "vercel_signature";
/// Security scheme: the provider-page session cookie SSO sets.
pub const VERCEL_SESSION: &str = "vercel_session";
/// Security scheme: Pub/Sub's OIDC push token.
pub const GOOGLE_PUSH: &str = "google_push";

/// Security scheme: the console's session cookie.
pub const CONSOLE_SESSION: &str = "console_session";

/// The body of errors on routes of no marketplace (Google push, timeouts):
/// `{"error":{"code","message"}}`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, ToSchema)]
pub struct GenericErrorBody {
    /// The error.
    pub error: GenericError,
}

/// What went wrong.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, ToSchema)]
pub struct GenericError {
    /// Stable code (`validation_error`, `unauthenticated`, ...).
    pub code: String,
    /// Message for developers.
    pub message: String,
}

/// `(status, description)` of every error a call can end with, whichever
/// its body: each error code of `marketbridge_core::ErrorCode` as its HTTP
/// status, and the body limit's 413.
const ERROR_STATUSES: [(u16, &str); 11] = [
    (400, "The request is not valid (validation_error)"),
    (401, "No valid credential (unauthenticated)"),
    (
        403,
        "The credential does not allow this (permission_denied)",
    ),
    (
        404,
        "Nothing of that id is visible to the caller (not_found)",
    ),
    (
        409,
        "The request conflicts with the current state (conflict)",
    ),
    (413, "The body is larger than 1 MiB (payload_too_large)"),
    (
        422,
        "An idempotency key reused with another request, or a request that cannot be carried out",
    ),
    (429, "Too many requests (rate_limited)"),
    (
        500,
        "An internal error; the details are logged, not answered",
    ),
    (503, "A service is unavailable; retry later (unavailable)"),
    (504, "The request did not finish in time (timeout)"),
];

fn error_responses(
    content_type: &str,
    schema: impl Fn() -> RefOr<utoipa::openapi::schema::Schema>,
) -> BTreeMap<String, RefOr<utoipa::openapi::response::Response>> {
    ERROR_STATUSES
        .iter()
        .map(|(status, description)| {
            // The body limit answers before any handler, in JSON.
            let (content_type, schema) = if *status == 413 {
                ("application/json", schema_ref("GenericErrorBody"))
            } else {
                (content_type, schema())
            };
            let response = ResponseBuilder::new()
                .description(*description)
                .content(
                    content_type,
                    ContentBuilder::new().schema(Some(schema)).build(),
                )
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

fn schema_ref(name: &str) -> RefOr<utoipa::openapi::schema::Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

/// Every error of the partner API, each with the Vercel error body.
pub struct VercelErrors;

impl utoipa::IntoResponses for VercelErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::response::Response>> {
        error_responses("application/json", || schema_ref("ErrorBody"))
    }
}

/// Every error of the simplified flow, each with the flow's error body.
pub struct FlowErrors;

impl utoipa::IntoResponses for FlowErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::response::Response>> {
        error_responses("application/json", || schema_ref("FlowErrorBody"))
    }
}

/// Every error of a route of no marketplace, with the generic error body.
pub struct GenericErrors;

impl utoipa::IntoResponses for GenericErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::response::Response>> {
        error_responses("application/json", || schema_ref("GenericErrorBody"))
    }
}

/// Every error of a page, shown as an HTML page with the error's status.
pub struct PageErrors;

impl utoipa::IntoResponses for PageErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::response::Response>> {
        error_responses("text/html", || {
            RefOr::T(utoipa::openapi::schema::Schema::Object(
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .build(),
            ))
        })
    }
}

/// `routes` with every path below `prefix` (the router and the document
/// alike).
pub fn prefixed<S>(prefix: &str, routes: UtoipaMethodRouter<S>) -> UtoipaMethodRouter<S> {
    let (schemas, mut paths, method_router) = routes;
    paths.paths = std::mem::take(&mut paths.paths)
        .into_iter()
        .map(|(path, item)| (format!("{prefix}{path}"), item))
        .collect();
    (schemas, paths, method_router)
}

/// `routes` (declared for one path) served at `path` instead.
pub fn relocated<S>(path: &str, routes: UtoipaMethodRouter<S>) -> UtoipaMethodRouter<S> {
    let (schemas, mut paths, method_router) = routes;
    paths.paths = std::mem::take(&mut paths.paths)
        .into_values()
        .map(|item| (path.to_owned(), item))
        .collect();
    (schemas, paths, method_router)
}

/// A Pub/Sub push delivery, as Google sends it (`google.push_path`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushEnvelope {
    /// The message.
    pub message: PushMessage,
    /// The subscription it came through.
    #[serde(default)]
    pub subscription: Option<String>,
    /// How often Pub/Sub tried to deliver it.
    #[serde(default)]
    pub delivery_attempt: Option<i64>,
}

/// A Pub/Sub message: `data` is the base64 of the notification's JSON
/// (`{"eventId","eventType","providerId","entitlement"|"account"}`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushMessage {
    /// Base64 of the notification.
    #[serde(default)]
    pub data: Option<String>,
    /// Message attributes.
    #[serde(default)]
    pub attributes: Option<BTreeMap<String, String>>,
    /// Pub/Sub's message id.
    #[serde(default)]
    pub message_id: Option<String>,
    /// When it was published (RFC 3339).
    #[serde(default)]
    pub publish_time: Option<String>,
}

/// The answer to a recorded push.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, ToSchema)]
pub struct PushRecorded {
    /// Always true.
    pub recorded: bool,
    /// True when the notification was recorded before.
    pub duplicate: bool,
}

/// Google's browser POST to `google.signup_path`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, ToSchema)]
pub struct SignupStart {
    /// The signup JWT Google signed.
    #[serde(rename = "x-gcp-marketplace-token", default)]
    pub token: Option<String>,
}

/// The submitted signup form (`{google.signup_path}/complete`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, ToSchema)]
pub struct SignupComplete {
    /// The ticket the form carries (signed by us).
    #[serde(default)]
    pub ticket: Option<String>,
    /// The person's name.
    #[serde(default)]
    pub name: Option<String>,
    /// Their e-mail address.
    #[serde(default)]
    pub email: Option<String>,
    /// Their company.
    #[serde(default)]
    pub company: Option<String>,
}

/// The confirmation form of a sign-in Vercel started (`{base}/sso/confirm`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, ToSchema)]
pub struct SsoConfirm {
    /// The nonce of the confirmation page.
    #[serde(default)]
    pub nonce: Option<String>,
}
