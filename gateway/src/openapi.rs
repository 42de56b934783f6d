//! The OpenAPI 3.1 document of every route the gateway serves, built from
//! the same declarations as the router: each adapter declares its routes
//! with `utoipa_axum::routes!` over handlers annotated with
//! `#[utoipa::path]`, so a route cannot be served without being documented,
//! nor documented without being served. Paths that depend on configuration
//! (`vercel.base_path`, `google.push_path`, `google.signup_path`) are
//! rewritten in both at once by [`prefixed`] and [`relocated`].
//!
//! Served at `GET /openapi.json`.

pub mod doc;

use crate::openapi::doc::{
    CONSOLE_SESSION, GOOGLE_PUSH, GenericErrorBody, VERCEL_AUTH_STYLE, VERCEL_OIDC, VERCEL_SESSION,
    VERCEL_SIGNATURE,
};
use crate::state::AppState;
use axum::extract::Extension;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/openapi.json";

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
        (name = "aws", description = "AWS Marketplace SaaS: the fulfillment URL, EventBridge and SNS notifications"),
        (name = "azure", description = "Azure Marketplace SaaS: the landing page and the connection webhook"),
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
            CONSOLE_SESSION,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::console::session::COOKIE_NAME,
                "The sealed operator session the console's sign-in sets",
            ))),
        );
        components.add_security_scheme(
            "azure_webhook",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "The Entra token Microsoft signs connection webhook calls with: our app \
                         as audience, our tenant, the Marketplace service as caller",
                    ))
                    .build(),
            ),
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
        .merge(crate::aws::routes(state))
        .merge(crate::azure::routes(state))
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
