//! Who is using the console, as every page and action checks it: the
//! operator of the session cookie (the gRPC calls they make carry their own
//! token), and the checks of a POST (same origin, the session's CSRF token).

use super::html::{self, escape};
use super::session::{self, COOKIE_NAME, ConsoleSession};
use crate::state::AppState;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use marketbridge_core::crypto::SecretString;
use std::collections::HashMap;

/// A signed-in operator, as a handler sees it.
pub(crate) struct Operator {
    pub name: String,
    pub csrf: String,
    token: SecretString,
}

impl Operator {
    /// Someone not signed in yet, holding `token`: to ask whose it is.
    pub fn probe(token: &str) -> Self {
        Self {
            name: String::new(),
            csrf: String::new(),
            token: SecretString::new(token.to_owned()),
        }
    }

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
pub(crate) fn http_status(status: &tonic::Status) -> StatusCode {
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

/// Now, in epoch seconds.
pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A 303 to `location` setting `cookies`.
pub(crate) fn redirect(location: &str, cookies: &[String]) -> Response {
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
