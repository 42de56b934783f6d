//! Azure's way into the shared signup page ([`crate::signup`]): the landing
//! page URL the portal opens with `?token=<purchase identification token>`.
//! The token is percent-decoded exactly once (Microsoft's emulator sends raw
//! base64, so a `+` must stay a `+`, which a form decoder would turn into a
//! space) and resolved by the account service with Microsoft; it never
//! reaches the form or a log. A 303 then takes it out of the address bar.

use crate::signup::{self, SignupEntry, Verified, Wording};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use marketbridge_core::{ErrorCode, Marketplace};
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::common::v1::{Marketplace as ProtoMarketplace, RequestContext};

/// The query parameter the portal puts the token in.
pub const TOKEN_PARAM: &str = "token";

/// How the signup pages speak of Azure.
pub static AZURE_WORDING: Wording = Wording {
    marketplace: "Azure Marketplace",
    account: "Azure SaaS subscription",
    console: "the Azure portal",
    fresh_link_html: "Return to the Azure portal, open the SaaS resource and choose <em>Configure account now</em> (or <em>Open SaaS account on publisher's site</em>) again to get a fresh link.",
};

fn entry(state: &AppState) -> SignupEntry {
    SignupEntry {
        marketplace: Marketplace::Azure,
        path: state
            .azure
            .adapter()
            .map(|a| a.landing_path.clone())
            .unwrap_or_default(),
        wording: &AZURE_WORDING,
    }
}

/// Percent-decodes `text` once; `+` stays `+`. `None` for a broken escape
/// or text that is not UTF-8.
pub fn percent_decode_once(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = bytes.get(index + 1..index + 3)?;
            let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            out.push(value);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The raw value of `name` in a query string, decoded once.
fn raw_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| percent_decode_once(value))
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// `GET {landing_path}`: the portal's link with `?token=` (resolved, then a
/// 303 to the same page without it), the clean URL carrying our ticket (the
/// form), or a visit without either.
#[utoipa::path(
    operation_id = "azure_landing_visit",
    get,
    path = "/azure/landing",
    tag = "azure",
    params(
        ("token" = Option<String>, Query, description = "The purchase identification token the Azure portal appends; resolved with Microsoft and answered with a 303 to a URL without it"),
        ("ticket" = Option<String>, Query, description = "The ticket the 303 carries (signed by us), never the Azure token")
    ),
    responses(
        (status = 200, description = "The signup form (or the account's page once signed up)", content_type = "text/html", body = String),
        (status = 303, description = "The token was resolved: to the landing page with our ticket and without the token", headers(("location" = String, description = "The landing page with the ticket"))),
        crate::openapi::doc::PageErrors
    )
)]
pub async fn visit(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let entry = entry(&state);
    if state.azure.adapter().is_none() {
        return entry.unavailable();
    }
    let has_token = query.as_deref().is_some_and(|q| {
        q.split('&')
            .any(|p| p.split('=').next() == Some(TOKEN_PARAM))
    });
    if has_token {
        let Some(token) = raw_param(query.as_deref(), TOKEN_PARAM) else {
            return not_valid(&entry);
        };
        return resolve(&state, &entry, token).await;
    }
    let fields = signup::query_fields(query.as_deref());
    signup::visit_with_ticket(&state, &entry, &fields).await
}

fn not_valid(entry: &SignupEntry) -> Response {
    entry.problem(
        StatusCode::UNAUTHORIZED,
        "This link is not valid",
        "Azure Marketplace did not recognise this purchase link, or it has expired.",
    )
}

async fn resolve(state: &AppState, entry: &SignupEntry, token: String) -> Response {
    let resolved = state
        .accounts
        .resolve_purchase(account_pb::ResolvePurchaseRequest {
            context: Some(RequestContext::default()),
            marketplace: ProtoMarketplace::Azure as i32,
            token,
        })
        .await;
    match resolved {
        Ok(answer) => {
            let Some(purchase) = answer.purchase else {
                return entry.unavailable();
            };
            let verified = Verified {
                account: purchase.subscription_external_id.clone(),
                user: purchase
                    .purchaser
                    .as_ref()
                    .map(|p| p.email.clone())
                    .filter(|e| !e.is_empty()),
                roles: Vec::new(),
                orders: vec![purchase.subscription_external_id],
            };
            signup::redirect_with_ticket(state, entry, &verified)
        }
        Err(error) => {
            tracing::warn!(code = ?error.code(), error = %error, "azure purchase token not resolved");
            match error.code() {
                ErrorCode::Unauthenticated
                | ErrorCode::Validation
                | ErrorCode::PermissionDenied => not_valid(entry),
                _ => entry.unavailable(),
            }
        }
    }
}

/// `POST {landing_path}/complete`: the submitted form.
#[utoipa::path(
    operation_id = "azure_landing_complete",
    post,
    path = "/azure/landing/complete",
    tag = "azure",
    request_body(content = crate::openapi::doc::SignupComplete, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Signed up: the subscription is activated with Microsoft", content_type = "text/html", body = String),
        crate::openapi::doc::PageErrors
    )
)]
pub async fn complete(State(state): State<AppState>, body: Bytes) -> Response {
    let entry = entry(&state);
    if state.azure.adapter().is_none() {
        return entry.unavailable();
    }
    signup::complete(&state, &entry, &body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_decoded_once_and_keep_their_plus_signs() {
        assert_eq!(
            percent_decode_once("ab+c%2Bd%3D%3D").as_deref(),
            Some("ab+c+d==")
        );
        assert_eq!(percent_decode_once("a%252B").as_deref(), Some("a%2B"));
        assert_eq!(percent_decode_once("bad%2"), None);
        assert_eq!(
            raw_param(Some("x=1&token=a+b%2Fc%3D"), "token").as_deref(),
            Some("a+b/c=")
        );
        assert_eq!(raw_param(Some("token="), "token"), None);
    }
}
