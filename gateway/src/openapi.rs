//! The OpenAPI 3.1 document of every route the gateway serves, built from
//! the same declarations as the router: each adapter declares its routes
//! with `utoipa_axum::routes!` over handlers annotated with
//! `#[utoipa::path]`, so a route cannot be served without being documented,
//! nor documented without being served. Paths that depend on configuration
//! (`vercel.base_path`, `google.push_path`, `google.signup_path`) are
//! rewritten in both at once by [`prefixed`] and [`relocated`].
//!
//! Served at `GET /openapi.json`.

use crate::state::AppState;
use axum::extract::Extension;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/openapi.json";

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

#[derive(OpenApi)]
#[openapi(
    info(
        title = "marketbridge gateway",
        description = "Every HTTP route the marketbridge gateway serves: the Vercel partner API, \
            the simplified `/marketplace/...` flow, Vercel webhooks, SSO and provider pages, \
            Google Cloud Marketplace Pub/Sub push and signup, the operator console, health, \
            and this document.",
    ),
    components(schemas(
        marketbridge_vercel::model::error::ErrorBody,
        marketbridge_vercel::model::flow::FlowErrorBody,
        GenericErrorBody,
    )),
    modifiers(&SecuritySchemes),
    tags(
        (name = "vercel", description = "The Vercel Marketplace partner API (below `vercel.base_path`)"),
        (name = "vercel-flow", description = "The simplified `/marketplace/...` flow (below `vercel.base_path`)"),
        (name = "vercel-pages", description = "Vercel webhooks, SSO and the provider pages"),
        (name = "google", description = "Google Cloud Marketplace: Pub/Sub push and the signup page"),
        (name = "health", description = "Liveness, readiness and this document"),
        (name = "console", description = "The operator console (HTML pages and forms; `gateway.console_enabled`)"),
    )
)]
struct Base;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi
            .components
            .get_or_insert_with(utoipa::openapi::Components::new);
        components.add_security_scheme(
            VERCEL_OIDC,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A Vercel OIDC token (RS256) for the integration; user tokens name the \
                         installation and the user, system tokens are Vercel's own.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            VERCEL_AUTH_STYLE,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Vercel-Auth",
                "`user` or `system`: the kind of the bearer token",
            ))),
        );
        components.add_security_scheme(
            VERCEL_SIGNATURE,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-vercel-signature",
                "Hex HMAC-SHA1 of the raw body with the integration's client secret",
            ))),
        );
        components.add_security_scheme(
            VERCEL_SESSION,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "mb_session",
                "The signed session SSO sets; without it a page starts Vercel's sign-in",
            ))),
        );
        components.add_security_scheme(
            crate::console::CONSOLE_SESSION,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::console::session::COOKIE_NAME,
                "The sealed operator session the console's sign-in sets",
            ))),
        );
        components.add_security_scheme(
            GOOGLE_PUSH,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "The Google-signed OIDC token Pub/Sub push sends, for the configured \
                         audience and service account",
                    ))
                    .build(),
            ),
        );
    }
}

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

/// The published document, as JSON.
#[derive(Clone)]
struct Published(Arc<String>);

/// Every route of the gateway and its document.
pub fn router_and_document(state: &AppState) -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let mut base = Base::openapi();
    base.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let (router, mut document) = OpenApiRouter::with_openapi(base)
        .merge(crate::health::routes())
        .merge(crate::vercel::routes(state))
        .merge(crate::google::routes(state))
        .merge(crate::console::routes(state))
        .routes(routes!(document))
        .split_for_parts();
    distinct_operation_ids(&mut document);
    (router, document)
}

/// One handler may serve two methods (`POST|PUT /marketplace/account`);
/// its operation then appears twice under one id, which OpenAPI forbids:
/// the second and later get the method appended.
fn distinct_operation_ids(document: &mut utoipa::openapi::OpenApi) {
    let mut seen = std::collections::BTreeSet::new();
    for item in document.paths.paths.values_mut() {
        let operations = [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
            ("patch", &mut item.patch),
        ];
        for (method, operation) in operations {
            let Some(operation) = operation.as_mut() else {
                continue;
            };
            let Some(id) = operation.operation_id.clone() else {
                continue;
            };
            if !seen.insert(id.clone()) {
                let renamed = format!("{id}_{method}");
                seen.insert(renamed.clone());
                operation.operation_id = Some(renamed);
            }
        }
    }
}

/// Every route of the gateway, `GET /openapi.json` included.
pub fn router(state: &AppState) -> axum::Router<AppState> {
    let (router, document) = router_and_document(state);
    let json = document
        .to_json()
        .unwrap_or_else(|error| format!(r#"{{"error":"{error}"}}"#));
    router.layer(Extension(Published(Arc::new(json))))
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi_document",
    tag = "health",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of every route", content_type = "application/json", body = Object),
    )
)]
async fn document(Extension(published): Extension<Published>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        published.0.as_str().to_owned(),
    )
        .into_response()
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
