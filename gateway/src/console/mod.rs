//! The operator console under `/console`: server-rendered pages over the
//! services' gRPC API, for the people who run marketbridge.
//!
//! An operator signs in with the bearer token of a named gRPC caller
//! holding `admin` (`marketbridge token NAME admin`); the gateway asks the
//! account service who the token belongs to (`WhoAmI`) and keeps a sealed
//! session cookie ([`session`]). Every call a page or an action makes
//! carries the operator's own token, so the services see (and audit) the
//! operator, never the gateway. Every POST carries the session's CSRF token
//! and must come from this origin (`Origin`, `Sec-Fetch-Site`); cookies are
//! `HttpOnly`, `SameSite=Strict`, `Secure` over HTTPS. Pages carry no script.

pub mod html;
mod operator;
mod pages;
pub mod session;

use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use html::escape;
use operator::{
    Operator, check_post, form, http_status, now, operator as signed_in, redirect, same_origin,
};
use session::{COOKIE_NAME, SIGN_IN_COOKIE};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use session::ConsoleKeys;

/// The console's routes (none when `gateway.console_enabled` is off).
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    if !state.config.gateway.console_enabled {
        return OpenApiRouter::new();
    }
    OpenApiRouter::new()
        .routes(routes!(pages::overview))
        .routes(routes!(sign_in_page, sign_in))
        .routes(routes!(sign_out))
        .routes(routes!(pages::accounts))
        .routes(routes!(pages::account))
        .routes(routes!(pages::subscriptions))
        .routes(routes!(pages::resources))
        .routes(routes!(pages::usage))
        .routes(routes!(pages::outbox))
        .routes(routes!(pages::events))
        .routes(routes!(pages::act))
}

fn sign_in_form(nonce: &str, error: &str) -> String {
    let error = if error.is_empty() {
        String::new()
    } else {
        format!(r#"<div class="error" id="error">{}</div>"#, escape(error))
    };
    format!(
        r#"<div class="signin"><h1>Operator sign-in</h1>{error}
<form method="post" action="/console/sign-in">
<input type="hidden" name="nonce" value="{}">
<label for="token">Operator token</label>
<input type="password" id="token" name="token" autocomplete="off" required>
<p class="muted">The bearer token of a gRPC caller holding the <code>admin</code> scope
(<code>marketbridge token NAME admin</code>). It is kept only in this browser's session cookie, encrypted.</p>
<button type="submit" id="sign-in">Sign in</button></form></div>"#,
        escape(nonce)
    )
}

fn sign_in_answer(state: &AppState, status: StatusCode, error: &str) -> Response {
    let nonce = marketbridge_core::crypto::random_token(24);
    let mut response = html::page(status, "Sign in", "", None, &sign_in_form(&nonce, error));
    let cookie = state.console.cookie(SIGN_IN_COOKIE, &nonce, 900);
    if let Ok(value) = cookie.parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// The sign-in page.
#[utoipa::path(
    get,
    path = "/console/sign-in",
    operation_id = "console_sign_in_page",
    tag = "console",
    responses((status = 200, description = "The operator sign-in form", content_type = "text/html", body = String), crate::openapi::doc::PageErrors)
)]
pub async fn sign_in_page(State(state): State<AppState>) -> Response {
    sign_in_answer(&state, StatusCode::OK, "")
}

/// The sign-in form.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SignInForm {
    /// The operator's gRPC bearer token.
    #[serde(default)]
    pub token: Option<String>,
    /// The nonce of the form (matches the sign-in cookie).
    #[serde(default)]
    pub nonce: Option<String>,
}

/// Signs an operator in: the token must name a caller holding `admin`.
#[utoipa::path(
    post,
    path = "/console/sign-in",
    operation_id = "console_sign_in",
    tag = "console",
    request_body(content = SignInForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "Signed in: to the overview, with the session cookie", headers(("location" = String), ("set-cookie" = String))), crate::openapi::doc::PageErrors)
)]
pub async fn sign_in(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let fields = form(&body);
    let nonce = fields.get("nonce").map(String::as_str).unwrap_or_default();
    let cookie = session::cookie(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    if !same_origin(&state, &headers)
        || nonce.is_empty()
        || !crate::cookies::same_text(nonce, &cookie)
    {
        return sign_in_answer(
            &state,
            StatusCode::FORBIDDEN,
            "This sign-in form expired or did not come from this console; try again.",
        );
    }
    let token = fields
        .get("token")
        .map(|t| t.trim().to_owned())
        .unwrap_or_default();
    if token.is_empty() || token.len() > 512 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return sign_in_answer(&state, StatusCode::BAD_REQUEST, "Enter an operator token.");
    }
    let probe = Operator::probe(&token);
    let who = state
        .clients
        .account
        .clone()
        .who_am_i(probe.call(marketbridge_proto::common::v1::WhoAmIRequest {}))
        .await;
    let who = match who {
        Ok(who) => who.into_inner(),
        Err(status) if status.code() == tonic::Code::Unauthenticated => {
            tracing::warn!("console sign-in with an unknown token");
            return sign_in_answer(
                &state,
                StatusCode::UNAUTHORIZED,
                "This token is not a caller the services know.",
            );
        }
        Err(status) => {
            return sign_in_answer(&state, http_status(&status), status.message());
        }
    };
    if !who.scopes.iter().any(|s| s == "admin") {
        tracing::warn!(operator = %who.name, "console sign-in refused: no admin scope");
        return sign_in_answer(
            &state,
            StatusCode::FORBIDDEN,
            &format!("The caller `{}` does not hold the admin scope.", who.name),
        );
    }
    let Some(started) = state.console.start(&who.name, &token, now()) else {
        return sign_in_answer(&state, StatusCode::SERVICE_UNAVAILABLE, "Try again.");
    };
    tracing::info!(operator = %who.name, "console sign-in");
    tracing::Span::current().record("console.operator", who.name.as_str());
    let sealed = state.console.seal(&started);
    redirect(
        "/console",
        &[
            state
                .console
                .cookie(COOKIE_NAME, &sealed, state.console.lifetime),
            state.console.cookie(SIGN_IN_COOKIE, "", 0),
        ],
    )
}

/// A form carrying only the CSRF token.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CsrfForm {
    /// The session's CSRF token.
    #[serde(default)]
    pub csrf: Option<String>,
}

/// Signs the operator out.
#[utoipa::path(
    post,
    path = "/console/sign-out",
    operation_id = "console_sign_out",
    tag = "console",
    request_body(content = CsrfForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "Signed out: to the sign-in page", headers(("location" = String), ("set-cookie" = String))), crate::openapi::doc::PageErrors),
    security(("console_session" = []))
)]
pub async fn sign_out(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let op = match signed_in(&state, &headers) {
        Ok(op) => op,
        Err(answer) => return *answer,
    };
    if let Err(answer) = check_post(&state, &headers, &op, &form(&body)) {
        return *answer;
    }
    tracing::info!(operator = %op.name, "console sign-out");
    redirect(
        "/console/sign-in",
        &[state.console.cookie(COOKIE_NAME, "", 0)],
    )
}
