//! What every provider page shares (the SSO landing, the dashboard, the
//! import page): the page frame, the error page that never shows an error's
//! own text, the ids a page accepts, and the way back through Vercel's
//! sign-in bound to the browser.

use super::session::{SSO_STATE_PARAM, new_sso_state, set_sso_state_cookie};
use super::state::VercelState;
use crate::error::status_of;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use marketbridge_core::{Error, ErrorCode};

/// Sections of the provider page Vercel may deep-link to (`path`).
pub const SECTIONS: [&str; 5] = ["billing", "usage", "onboarding", "secrets", "support"];

/// The page path of an installation (`installation_id` checked with
/// [`is_installation_id`]).
pub fn installation_path(state: &VercelState, installation_id: &str) -> String {
    format!("{}/dashboard/{installation_id}", state.base_path)
}

/// True for an installation id of Vercel's form: `icfg_` and letters or
/// digits. Ids are checked before they go into a page, a link or a
/// redirect.
pub fn is_installation_id(id: &str) -> bool {
    let Some(body) = id.strip_prefix("icfg_") else {
        return false;
    };
    !body.is_empty() && body.len() <= 64 && body.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// True for a plain id (letters, digits, `_`, `-`, at most 128): what an
/// invoice id in a path or a deep link may be.
pub fn is_plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `text` escaped for HTML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A page of the provider, never cached.
pub fn page(title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem}}\
         table{{border-collapse:collapse}}td,th{{padding:.25rem .75rem;border-bottom:1px solid #ddd;text-align:left}}</style>\
         </head><body>{body}</body></html>",
        title = escape(title)
    );
    let mut response = Html(html).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    response
}

/// The reference shown on an error page and logged with the error: the
/// request's trace id, or a random one when the request is not traced.
fn error_reference() -> String {
    marketbridge_telemetry::current_traceparent()
        .and_then(|traceparent| traceparent.split('-').nth(1).map(str::to_owned))
        .filter(|trace_id| !trace_id.is_empty())
        .unwrap_or_else(|| marketbridge_core::crypto::random_token(12))
}

/// What a page says about an error: one sentence per kind of error, never
/// the error's own text (which may carry what an upstream answered).
fn generic_message(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Unauthenticated => "You are not signed in, or your sign-in has expired.",
        ErrorCode::PermissionDenied => "You cannot open this page with this sign-in.",
        ErrorCode::NotFound => "This page does not exist.",
        ErrorCode::Validation => "The link you followed is not valid.",
        _ => "Something went wrong on our side.",
    }
}

/// An error as a generic page with the error's status: the details go to
/// the log under the reference the page shows.
pub fn error_page(error: &Error) -> Response {
    let reference = error_reference();
    let status = status_of(error);
    if status.is_server_error() {
        tracing::warn!(reference = %reference, code = error.code().as_str(), error = %error, "vercel page failed");
    } else {
        tracing::info!(reference = %reference, code = error.code().as_str(), error = %error, "vercel page refused");
    }
    let mut response = page(
        "Cannot open this page",
        &format!(
            "<h1>Cannot open this page</h1><p>{}</p><p>Open the integration again from the Vercel dashboard.</p>\
             <p><small>Reference: <code>{}</code></small></p>",
            generic_message(error.code()),
            escape(&reference)
        ),
    );
    *response.status_mut() = status;
    response
}

/// A 303 to Vercel's sign-in for `installation_id` (when the integration's
/// slug is configured), coming back to `back` (a path of ours): a fresh
/// nonce goes in a short-lived cookie and, as `mb_state`, in the query
/// Vercel passes back, so the sign-in that returns is bound to this browser.
pub fn to_vercel_sign_in(
    state: &VercelState,
    installation_id: &str,
    back: &str,
) -> Option<Response> {
    let start = state.sso_start.as_ref()?;
    if !is_installation_id(installation_id) {
        return None;
    }
    let mut target = url::Url::parse(start).ok()?;
    target
        .path_segments_mut()
        .ok()?
        .pop_if_empty()
        .push(installation_id);
    let nonce = new_sso_state();
    target
        .query_pairs_mut()
        .append_pair("url", back)
        .append_pair(SSO_STATE_PARAM, &nonce);
    let location = HeaderValue::from_str(target.as_str()).ok()?;
    let cookie = HeaderValue::from_str(&set_sso_state_cookie(
        &nonce,
        &state.base_path,
        state.secure_cookies(),
    ))
    .ok()?;
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(header::SET_COOKIE, cookie);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Some(response)
}
