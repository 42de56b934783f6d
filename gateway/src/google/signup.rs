//! Google's way into the shared signup page ([`crate::signup`]). Google
//! POSTs the signup token (or puts it in the query string of the signup
//! URL); we verify the JWT ourselves and continue with the shared page. A
//! token that came in the URL is taken out of it at once: a 303 to the same
//! page with only our ticket, so it stays out of history, `Referer` and
//! access logs. Submitting the form records the signup with the account
//! service, which approves the account with Google through its outbox and
//! then lets provisioning approve the entitlements that waited for it.

use super::state::GoogleAdapter;
use crate::signup::{self, SignupEntry, Verified, Wording};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use marketbridge_core::Marketplace;
use marketbridge_google::signup_token::{SIGNUP_TOKEN_FIELD, SignupClaims};
use marketbridge_google::token::RejectReason;

/// How the signup pages speak of Google.
pub static GOOGLE_WORDING: Wording = Wording {
    marketplace: "Google Cloud Marketplace",
    account: "Google Cloud account",
    console: "the Google Cloud console",
    fresh_link_html: "Return to Google Cloud Marketplace and choose <em>Sign up with provider</em> (or <em>Manage on provider</em>) again to get a fresh link.",
};

fn entry(adapter: &GoogleAdapter) -> SignupEntry {
    SignupEntry {
        marketplace: Marketplace::Google,
        path: adapter.signup_path.clone(),
        wording: &GOOGLE_WORDING,
    }
}

fn verified(claims: &SignupClaims) -> Verified {
    Verified {
        account: claims.account_id.clone(),
        user: claims.user_identity.clone(),
        roles: claims.roles.clone(),
        orders: claims.orders.clone(),
    }
}

/// `GET {signup_path}`: Google's link with the signup token in the query
/// string (verified, then a 303 to the same page without it), the clean URL
/// carrying our ticket (the form), or a visit without either.
#[utoipa::path(
    operation_id = "google_signup_visit",
    get,
    path = "/google/signup",
    tag = "google",
    params(
        ("x-gcp-marketplace-token" = Option<String>, Query, description = "The signup JWT Google signed, when Google's link carries it; answered with a 303 to a URL without it"),
        ("ticket" = Option<String>, Query, description = "The ticket the 303 carries (signed by us), never the Google token")
    ),
    responses(
        (status = 200, description = "The signup form (or the account's page once signed up)", content_type = "text/html", body = String),
        (status = 303, description = "The token was verified: to the signup page with our ticket and without the token", headers(("location" = String, description = "The signup page with the ticket"))),
        crate::openapi::doc::PageErrors
    )
)]
pub async fn visit(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let Some(adapter) = state.google.adapter() else {
        return entry_without_adapter().unavailable();
    };
    let entry = entry(adapter);
    let query = signup::query_fields(query.as_deref());
    if let Some(token) = signup::non_empty(&query, SIGNUP_TOKEN_FIELD) {
        return match verify(adapter, &entry, token).await {
            Ok(claims) => signup::redirect_with_ticket(&state, &entry, &verified(&claims)),
            Err(refusal) => refusal,
        };
    }
    signup::visit_with_ticket(&state, &entry, &query).await
}

/// `POST {signup_path}`: Google's form post with the signup token (in the
/// form, or in the query string; both must agree when both are given).
#[utoipa::path(
    operation_id = "google_signup_start",
    post,
    path = "/google/signup",
    tag = "google",
    params(
        ("x-gcp-marketplace-token" = Option<String>, Query, description = "The signup JWT when Google appends it to the URL; answered with a 303 to a URL without it")
    ),
    request_body(content = crate::openapi::doc::SignupStart, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The signup form (or the account's page once signed up)", content_type = "text/html", body = String),
        (status = 303, description = "The token came in the URL and was verified: to the signup page with our ticket and without the token", headers(("location" = String, description = "The signup page with the ticket"))),
        crate::openapi::doc::PageErrors
    )
)]
pub async fn start(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let Some(adapter) = state.google.adapter() else {
        return entry_without_adapter().unavailable();
    };
    let entry = entry(adapter);
    let fields = signup::form_fields(&body);
    let query = signup::query_fields(query.as_deref());
    let in_form = signup::non_empty(&fields, SIGNUP_TOKEN_FIELD);
    let in_query = signup::non_empty(&query, SIGNUP_TOKEN_FIELD);
    let token = match (in_form, in_query) {
        (Some(form), Some(url)) if form != url => {
            tracing::warn!("signup with two different tokens refused");
            return entry.problem(
                StatusCode::BAD_REQUEST,
                "This signup link is not valid",
                "The request carried two different signup tokens.",
            );
        }
        (Some(token), _) | (None, Some(token)) => token,
        (None, None) => return entry.start_from_marketplace(),
    };
    let claims = match verify(adapter, &entry, token).await {
        Ok(claims) => claims,
        Err(refusal) => return refusal,
    };
    if in_query.is_some() {
        return signup::redirect_with_ticket(&state, &entry, &verified(&claims));
    }
    signup::show_verified(&state, &entry, &verified(&claims)).await
}

/// `POST {signup_path}/complete`: the submitted form.
#[utoipa::path(
    operation_id = "google_signup_complete",
    post,
    path = "/google/signup/complete",
    tag = "google",
    request_body(content = crate::openapi::doc::SignupComplete, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Signed up: the account is approved with Google", content_type = "text/html", body = String),
        crate::openapi::doc::PageErrors
    )
)]
pub async fn complete(State(state): State<AppState>, body: Bytes) -> Response {
    let Some(adapter) = state.google.adapter() else {
        return entry_without_adapter().unavailable();
    };
    signup::complete(&state, &entry(adapter), &body).await
}

/// The entry to word pages with when Google is not configured.
fn entry_without_adapter() -> SignupEntry {
    SignupEntry {
        marketplace: Marketplace::Google,
        path: String::new(),
        wording: &GOOGLE_WORDING,
    }
}

/// Verifies a signup token, whatever carried it; a refusal is the page to
/// answer with. The token itself is never logged.
async fn verify(
    adapter: &GoogleAdapter,
    entry: &SignupEntry,
    token: &str,
) -> Result<SignupClaims, Response> {
    let Some(verifier) = adapter.signup.as_ref() else {
        return Err(entry.unavailable());
    };
    match verifier.verify(token).await {
        Ok(claims) => {
            tracing::info!(google.account = %claims.account_id, "signup token verified");
            Ok(claims)
        }
        Err(rejected) => {
            tracing::warn!(reason = rejected.reason.as_str(), error = %rejected, "signup token refused");
            Err(match rejected.reason {
                RejectReason::Expired => entry.problem(
                    StatusCode::UNAUTHORIZED,
                    "This signup link has expired",
                    "The link from Google Cloud Marketplace is only valid for a few minutes.",
                ),
                RejectReason::KeysUnavailable => entry.unavailable(),
                _ => entry.problem(
                    StatusCode::UNAUTHORIZED,
                    "This signup link is not valid",
                    "We could not verify that this request came from Google Cloud Marketplace for this product.",
                ),
            })
        }
    }
}
