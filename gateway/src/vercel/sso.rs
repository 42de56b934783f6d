//! The Redirect Login URL (`GET {base}/sso`): "Open in provider" from the
//! Vercel dashboard. The one-time `code` is exchanged for the user's
//! `id_token`, which is verified like any Vercel token; a signed session
//! cookie is set and the browser lands on the provider page of the
//! installation, resource or invoice it came for.

use super::body::query_map;
use super::pages::{
    SECTIONS, error_page, escape, installation_path, is_installation_id, is_plain_id, page,
    to_vercel_sign_in,
};
use super::session::{
    SESSION_SECONDS, SSO_PENDING_COOKIE, SSO_STATE_PARAM, SSO_STATE_SECONDS, Session,
    clear_pending_cookie, clear_sso_state_cookie, new_sso_state, set_cookie, set_pending_cookie,
    sso_state_matches,
};
use super::state::VercelState;
use crate::cookies::{cookie_named, same_text};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use marketbridge_core::ids::ResourceId;
use marketbridge_core::{Error, Result};
use marketbridge_vercel::model::vercel_api::SsoTokenRequest;
use marketbridge_vercel::oidc::{AuthKind, TokenUse, now_epoch_seconds};
use std::collections::BTreeMap;

/// Handles the redirect; answers a 303 to the provider page with the
/// session cookie, or an error page.
///
/// A sign-in is bound to the browser: one the gateway started (a page opened
/// without a session) carries `mb_state`, which must equal the nonce cookie
/// set when the browser was sent to Vercel. One Vercel started (no
/// `mb_state`) cannot be told apart from a link an attacker had Vercel make
/// for their own installation, so when the integration's slug is known the
/// browser is sent through Vercel's sign-in once more, now bound: Vercel
/// signs in whoever really uses the browser, and the first code opens
/// nothing. Without the slug the person confirms the sign-in on a page of
/// ours ([`confirm`]) before a session opens.
#[utoipa::path(
    operation_id = "sso_redirect_login",
    get,
    path = "/sso",
    tag = "vercel-pages",
    params(("mode" = Option<String>, Query, description = "`sso`"), ("code" = Option<String>, Query, description = "The one-time code to exchange"), ("state" = Option<String>, Query, description = "Vercel's state"), ("url" = Option<String>, Query, description = "A page of this provider to land on"), ("mb_state" = Option<String>, Query, description = "The sign-in nonce when the gateway started the sign-in"), ("resource_id" = Option<String>, Query, description = "A resource to land on"), ("invoice_id" = Option<String>, Query, description = "An invoice to land on"), ("path" = Option<String>, Query, description = "A section of the provider page")),
    responses((status = 303, description = "Signed in: to the provider page with the session cookie, or through Vercel's sign-in bound to this browser", headers(("location" = String, description = "Where to go"), ("set-cookie" = String, description = "The session or the sign-in nonce"))), crate::openapi::doc::PageErrors)
)]
pub async fn redirect_login(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = query_map(query.as_deref());
    let vercel = &state.vercel;
    let bound = match query.get(SSO_STATE_PARAM) {
        Some(nonce) if sso_state_matches(&headers, nonce) => true,
        Some(_) => {
            return error_page(&Error::permission_denied(
                "the sign-in was not started in this browser (no matching sign-in cookie)",
            ));
        }
        None => false,
    };
    let (session, target) = match sign_in(vercel, &query).await {
        Ok(signed_in) => signed_in,
        Err(error) => return error_page(&error),
    };
    if !bound {
        if let Some(again) = to_vercel_sign_in(vercel, &session.installation_id, &target) {
            tracing::info!(installation.id = %session.installation_id, "vercel sso started by vercel; signing in again bound to this browser");
            return again;
        }
        // Without the slug the browser cannot be sent through Vercel again:
        // the person confirms the sign-in on a page of ours instead, so a
        // link an attacker made for their own installation opens nothing by
        // itself (the confirmation is a same-site form post, which a
        // cross-site page cannot send with this browser's cookies).
        tracing::info!(installation.id = %session.installation_id, "vercel sso started by vercel; asking the person to confirm it");
        return confirmation_page(vercel, &session, &target);
    }
    open_session(vercel, &session, &target, bound)
}

/// Answers the sign-in: the session cookie and a 303 to `target`.
fn open_session(vercel: &VercelState, session: &Session, target: &str, bound: bool) -> Response {
    let sealed = vercel.sessions.seal(session);
    let secure = vercel.secure_cookies();
    let cookie = set_cookie(&sealed, &vercel.base_path, secure);
    let (Ok(location), Ok(cookie)) = (
        HeaderValue::from_str(target),
        HeaderValue::from_str(&cookie),
    ) else {
        return error_page(&Error::internal("the landing page address is not valid"));
    };
    let mut response = StatusCode::SEE_OTHER.into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(header::LOCATION, location);
    response_headers.insert(header::SET_COOKIE, cookie);
    let clear = if bound {
        clear_sso_state_cookie(&vercel.base_path, secure)
    } else {
        clear_pending_cookie(&vercel.base_path, secure)
    };
    if let Ok(clear) = HeaderValue::from_str(&clear) {
        response_headers.append(header::SET_COOKIE, clear);
    }
    response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    tracing::info!(installation.id = %session.installation_id, bound, "vercel sso session opened");
    response
}

/// The page asking the person to confirm a sign-in Vercel started, with the
/// pending sign-in in a short-lived cookie and its nonce in the form.
fn confirmation_page(vercel: &VercelState, session: &Session, target: &str) -> Response {
    let nonce = new_sso_state();
    let pending = Session {
        expires_at: chrono::Utc::now().timestamp() + SSO_STATE_SECONDS,
        ..session.clone()
    };
    let value = format!(
        "{nonce}~{}~{}",
        vercel.sessions.seal(&pending),
        URL_SAFE_NO_PAD.encode(target)
    );
    let who = if session.user_email.is_empty() {
        session.user_name.clone()
    } else {
        format!("{} ({})", session.user_name, session.user_email)
    };
    let mut response = page(
        "Confirm sign-in",
        &format!(
            "<h1>Confirm sign-in</h1><p>Vercel signed you in as <strong>{who}</strong> to the installation \
             <code>{installation}</code>.</p><p>Continue only if you opened this integration from your own Vercel \
             dashboard just now.</p><form method=\"post\" action=\"{action}\"><input type=\"hidden\" \
             name=\"nonce\" value=\"{nonce}\"><button type=\"submit\">Continue</button></form>",
            who = escape(&who),
            installation = escape(&session.installation_id),
            action = escape(&format!("{}/sso/confirm", vercel.base_path)),
        ),
    );
    if let Ok(cookie) = HeaderValue::from_str(&set_pending_cookie(
        &value,
        &vercel.base_path,
        vercel.secure_cookies(),
    )) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// `POST {base}/sso/confirm`: the person confirmed a sign-in Vercel started;
/// the session opens only in the browser holding the pending sign-in.
#[utoipa::path(
    operation_id = "sso_confirm",
    post,
    path = "/sso/confirm",
    tag = "vercel-pages",
    request_body(content = crate::openapi::doc::SsoConfirm, content_type = "application/x-www-form-urlencoded", description = "`nonce`: the nonce of the confirmation page"),
    responses((status = 303, description = "Signed in: to the provider page with the session cookie", headers(("location" = String, description = "Where to go"), ("set-cookie" = String, description = "The session"))), crate::openapi::doc::PageErrors)
)]
pub async fn confirm(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let vercel = &state.vercel;
    let refused = || {
        error_page(&Error::permission_denied(
            "no sign-in waits for confirmation in this browser",
        ))
    };
    let nonce: Option<String> = url::form_urlencoded::parse(&body)
        .find(|(name, _)| name == "nonce")
        .map(|(_, value)| value.into_owned());
    let Some(pending) = cookie_named(&headers, SSO_PENDING_COOKIE) else {
        return refused();
    };
    let mut parts = pending.splitn(3, '~');
    let (Some(expected), Some(sealed), Some(target)) = (parts.next(), parts.next(), parts.next())
    else {
        return refused();
    };
    if !nonce.is_some_and(|nonce| !nonce.is_empty() && same_text(&nonce, expected)) {
        return refused();
    }
    let Some(session) = vercel.sessions.open(sealed, chrono::Utc::now().timestamp()) else {
        return refused();
    };
    let Some(target) = URL_SAFE_NO_PAD
        .decode(target)
        .ok()
        .and_then(|t| String::from_utf8(t).ok())
        .and_then(|t| validated_url(vercel, &t).ok())
    else {
        return refused();
    };
    let session = Session {
        expires_at: chrono::Utc::now().timestamp() + SESSION_SECONDS,
        ..session
    };
    tracing::info!(installation.id = %session.installation_id, "vercel sso confirmed by the person");
    open_session(vercel, &session, &target, false)
}

async fn sign_in(
    state: &VercelState,
    query: &BTreeMap<String, String>,
) -> Result<(Session, String)> {
    if query.get("mode").map(String::as_str) != Some("sso") {
        return Err(Error::invalid_field("mode", "must be `sso`"));
    }
    let code = query
        .get("code")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Error::invalid_field("code", "is required"))?;
    // Check the deep links before spending the one-time code.
    let explicit_target = match query.get("url").filter(|u| !u.is_empty()) {
        Some(url) => Some(validated_url(state, url)?),
        None => None,
    };
    let tokens = state
        .api
        .exchange_sso_code(&SsoTokenRequest {
            code: code.clone(),
            state: query.get("state").cloned(),
            client_id: state.client_id.clone(),
            client_secret: state.client_secret.expose().to_owned(),
            redirect_uri: None,
            grant_type: Some("authorization_code".to_owned()),
        })
        .await
        .map_err(|error| {
            if error.code().is_transient() {
                error
            } else {
                Error::unauthenticated(format!("the sign-in code was refused: {}", error.message()))
            }
        })?;
    let claims = state.verifier.verify(&tokens.id_token).await?;
    claims.check(
        AuthKind::User,
        TokenUse::SignIn,
        now_epoch_seconds(),
        state.token_rules,
    )?;
    let installation_id = claims
        .installation_id
        .clone()
        .filter(|id| is_installation_id(id))
        .ok_or_else(|| Error::unauthenticated("the id token names no valid installation"))?;
    let user_id = claims
        .user_id
        .clone()
        .ok_or_else(|| Error::unauthenticated("the id token names no user"))?;
    let session = Session {
        installation_id: installation_id.clone(),
        user_id,
        user_role: claims.user_role.clone().unwrap_or_default(),
        user_name: claims.user_name.clone().unwrap_or_default(),
        user_email: claims.user_email.clone().unwrap_or_default(),
        expires_at: chrono::Utc::now().timestamp() + SESSION_SECONDS,
    };
    let target = match explicit_target {
        Some(target) => target,
        None => landing_page(state, &installation_id, query),
    };
    Ok((session, target))
}

/// The provider page for the deep links of the redirect.
fn landing_page(
    state: &VercelState,
    installation_id: &str,
    query: &BTreeMap<String, String>,
) -> String {
    let base = installation_path(state, installation_id);
    let section = query
        .get("path")
        .filter(|p| SECTIONS.contains(&p.as_str()))
        .map(|p| format!("?section={p}"))
        .unwrap_or_default();
    if let Some(invoice_id) = query.get("invoice_id").filter(|id| is_plain_id(id)) {
        return format!("{base}/invoices/{invoice_id}{section}");
    }
    if let Some(resource_id) = query
        .get("resource_id")
        .filter(|id| ResourceId::parse("resource_id", id).is_ok())
    {
        return format!("{base}/resources/{resource_id}{section}");
    }
    format!("{base}{section}")
}

/// A `url` deep link is only followed to our own pages: a path below the
/// base path, or an absolute URL on the public URL's origin.
fn validated_url(state: &VercelState, url: &str) -> Result<String> {
    let invalid = || Error::invalid_field("url", "must point at this provider's pages");
    let prefix = format!("{}/", state.base_path);
    let path = if url.starts_with('/') && !url.starts_with("//") && !url.contains('\\') {
        url.to_owned()
    } else {
        let parsed = url::Url::parse(url).map_err(|_| invalid())?;
        let public = url::Url::parse(&state.public_url).map_err(|_| invalid())?;
        if parsed.origin() != public.origin() {
            return Err(invalid());
        }
        let mut path = parsed.path().to_owned();
        if let Some(query) = parsed.query() {
            path = format!("{path}?{query}");
        }
        path
    };
    if !path.starts_with(&prefix) || path.contains("..") {
        return Err(invalid());
    }
    Ok(path)
}
