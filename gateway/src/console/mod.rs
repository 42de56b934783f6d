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
mod pages;
pub mod session;

use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use html::escape;
use marketbridge_core::crypto::SecretString;
use session::{COOKIE_NAME, ConsoleSession, SIGN_IN_COOKIE};
use std::collections::HashMap;
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

/// A signed-in operator, as a handler sees it.
pub(crate) struct Operator {
    pub name: String,
    pub csrf: String,
    token: SecretString,
}

impl Operator {
    /// `message` as a gRPC request made as this operator.
    pub fn call<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Ok(value) = format!("Bearer {}", self.token.expose()).parse() {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    /// A page of the console for this operator.
    pub fn page(&self, title: &str, current: &str, body: &str) -> Response {
        html::page(
            StatusCode::OK,
            title,
            current,
            Some((&self.name, &self.csrf)),
            body,
        )
    }

    /// The page telling what a call ended with.
    pub fn failure(&self, status: &tonic::Status) -> Response {
        let code = http_status(status);
        let body = format!(
            r#"<h1>{}</h1><div class="error" id="error">{}</div><p><a href="/console">Back to the overview</a></p>"#,
            code.canonical_reason().unwrap_or("Error"),
            escape(status.message())
        );
        html::page(code, "Error", "", Some((&self.name, &self.csrf)), &body)
    }
}

/// The HTTP status of a gRPC answer.
fn http_status(status: &tonic::Status) -> StatusCode {
    use tonic::Code;
    match status.code() {
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn redirect(location: &str, cookies: &[String]) -> Response {
    let mut response = (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, location.to_owned())],
    )
        .into_response();
    for cookie in cookies {
        if let Ok(value) = cookie.parse() {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// The operator of a request, or the answer sending them to sign in.
pub(crate) fn operator(state: &AppState, headers: &HeaderMap) -> Result<Operator, Box<Response>> {
    let keys = &state.console;
    let session: Option<ConsoleSession> =
        session::cookie(headers, COOKIE_NAME).and_then(|value| keys.open(&value, now()));
    let Some(session) = session else {
        return Err(Box::new(redirect("/console/sign-in", &[])));
    };
    let Some(token) = keys.token(&session) else {
        return Err(Box::new(redirect("/console/sign-in", &[])));
    };
    Ok(Operator {
        name: session.operator,
        csrf: session.csrf,
        token,
    })
}

/// The fields of a form body.
pub(crate) fn form(body: &Bytes) -> HashMap<String, String> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The query's parameters.
pub(crate) fn query(raw: Option<String>) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// True when a POST comes from a page of this origin. `Sec-Fetch-Site`,
/// which browsers send, decides when present (`same-origin`). Otherwise
/// `Origin`, when sent, must be this gateway (its `Host` or
/// `gateway.public_url`); an opaque `null` origin is refused. The pages'
/// `no-referrer` policy makes browsers send `Origin: null` on their own
/// forms, which is why `Sec-Fetch-Site` comes first.
pub(crate) fn same_origin(state: &AppState, headers: &HeaderMap) -> bool {
    let text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return site == "same-origin";
    }
    let Some(origin) = text(header::ORIGIN) else {
        return true;
    };
    let public = url::Url::parse(&state.config.gateway.public_url)
        .ok()
        .map(|u| u.origin().ascii_serialization());
    if public.as_deref() == Some(origin.as_str()) {
        return true;
    }
    let host = text(header::HOST).unwrap_or_default();
    url::Url::parse(&origin)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| (h.to_owned(), u.port_or_known_default()))
        })
        .is_some_and(|(h, port)| {
            let expected = match port {
                Some(p) if p != 80 && p != 443 => format!("{h}:{p}"),
                _ => h,
            };
            !host.is_empty() && expected.eq_ignore_ascii_case(&host)
        })
}

/// The answer to a refused POST.
pub(crate) fn forbidden(why: &str) -> Response {
    let body = format!(
        r#"<h1>Forbidden</h1><div class="error" id="error">{}</div><p><a href="/console">Back to the console</a></p>"#,
        escape(why)
    );
    html::page(StatusCode::FORBIDDEN, "Forbidden", "", None, &body)
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
    let probe = Operator {
        name: String::new(),
        csrf: String::new(),
        token: SecretString::new(token.clone()),
    };
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
    let op = match operator(&state, &headers) {
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

/// Checks a POST of a signed-in operator: same origin, and the session's
/// CSRF token in the form.
pub(crate) fn check_post(
    state: &AppState,
    headers: &HeaderMap,
    op: &Operator,
    fields: &HashMap<String, String>,
) -> Result<(), Box<Response>> {
    if !same_origin(state, headers) {
        return Err(Box::new(forbidden(
            "This form did not come from this console.",
        )));
    }
    let csrf = fields.get("csrf").map(String::as_str).unwrap_or_default();
    if csrf.is_empty() || !crate::cookies::same_text(csrf, &op.csrf) {
        return Err(Box::new(forbidden(
            "This form's security token does not match your session; reload the page and try again.",
        )));
    }
    Ok(())
}
