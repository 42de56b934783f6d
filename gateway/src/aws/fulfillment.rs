//! AWS's way into the shared signup page ([`crate::signup`]): the buyer's
//! browser POSTs `x-amzn-marketplace-token` to the fulfillment URL; the
//! account service resolves it with AWS (`ResolveCustomer`) and records
//! the purchase, and a 303 takes the buyer to the signup page with our
//! ticket only. The token is never logged or put in a URL we answer with.

use crate::signup::{self, SignupEntry, Verified, Wording};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use marketbridge_core::{ErrorCode, Marketplace};
use marketbridge_proto::account::v1::ResolvePurchaseRequest;

/// The form field (and query parameter) carrying the registration token.
pub const TOKEN_FIELD: &str = "x-amzn-marketplace-token";

/// How the signup pages speak of AWS.
pub static AWS_WORDING: Wording = Wording {
    marketplace: "AWS Marketplace",
    account: "AWS account",
    console: "AWS Marketplace",
    fresh_link_html: "Return to AWS Marketplace (<em>Your Marketplace Software</em>) and choose <em>Set up your account</em> again to get a fresh link.",
};

fn entry(state: &AppState) -> SignupEntry {
    SignupEntry {
        marketplace: Marketplace::Aws,
        path: state
            .aws
            .adapter()
            .map(|a| a.fulfillment_path.clone())
            .unwrap_or_default(),
        wording: &AWS_WORDING,
    }
}

/// The token of a `multipart/form-data` body, read leniently.
fn multipart_token(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let marker = format!("name=\"{TOKEN_FIELD}\"");
    let after = &text[text.find(&marker)? + marker.len()..];
    let value_start = after
        .find("\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| after.find("\n\n").map(|i| i + 2))?;
    let value = &after[value_start..];
    let end = value
        .find("\r\n--")
        .or_else(|| value.find("\n--"))
        .unwrap_or(value.len());
    Some(value[..end].trim().to_owned()).filter(|v| !v.is_empty())
}

async fn resolve(state: &AppState, entry: &SignupEntry, token: &str) -> Result<Verified, Response> {
    let resolved = state
        .accounts
        .resolve_purchase(ResolvePurchaseRequest {
            context: None,
            marketplace: Marketplace::Aws.to_proto(),
            token: token.to_owned(),
        })
        .await;
    match resolved {
        Ok(answer) => {
            let account = answer
                .account
                .and_then(|a| a.marketplace_ref)
                .map(|r| r.external_id)
                .unwrap_or_default();
            let orders = answer
                .purchase
                .map(|p| vec![p.subscription_external_id])
                .unwrap_or_default();
            tracing::info!(aws.license = %account, "aws registration token resolved");
            Ok(Verified {
                account,
                user: None,
                roles: Vec::new(),
                orders,
            })
        }
        Err(error) => {
            tracing::warn!(code = %error.code().as_str(), "aws registration token not resolved");
            Err(match error.code() {
                ErrorCode::Unauthenticated | ErrorCode::PermissionDenied => entry.problem(
                    StatusCode::UNAUTHORIZED,
                    "This registration link is not valid",
                    "AWS Marketplace did not recognise this registration, or it has expired.",
                ),
                ErrorCode::Validation => entry.problem(
                    StatusCode::BAD_REQUEST,
                    "This registration link is not valid",
                    "The request did not carry a usable registration token.",
                ),
                _ => entry.unavailable(),
            })
        }
    }
}

/// `POST {fulfillment_path}`: AWS Marketplace's registration POST.
#[utoipa::path(
    operation_id = "aws_fulfillment_start",
    post,
    path = "/aws/fulfillment",
    tag = "aws",
    params(
        ("x-amzn-marketplace-token" = Option<String>, Query, description = "The registration token when it travels in the URL (the form field is preferred)")
    ),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`x-amzn-marketplace-token=<token>` (multipart/form-data is accepted too)"),
    responses(
        (status = 303, description = "Resolved with AWS: to the signup page with our ticket and without the token", headers(("location" = String, description = "The signup page with the ticket"))),
        crate::openapi::doc::PageErrors
    )
)]
pub async fn start(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let entry = entry(&state);
    let multipart = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let fields = signup::form_fields(&body);
    let query = signup::query_fields(query.as_deref());
    let in_form = if multipart {
        multipart_token(&body)
    } else {
        signup::non_empty(&fields, TOKEN_FIELD).map(str::to_owned)
    };
    let in_query = signup::non_empty(&query, TOKEN_FIELD).map(str::to_owned);
    let Some(token) = in_form.or(in_query) else {
        return entry.start_from_marketplace();
    };
    match resolve(&state, &entry, &token).await {
        Ok(verified) => signup::redirect_with_ticket(&state, &entry, &verified),
        Err(refusal) => refusal,
    }
}

/// `GET {fulfillment_path}`: the token in the query string (resolved, then
/// a 303 without it), or the clean URL with our ticket (the form).
#[utoipa::path(
    operation_id = "aws_fulfillment_visit",
    get,
    path = "/aws/fulfillment",
    tag = "aws",
    params(
        ("x-amzn-marketplace-token" = Option<String>, Query, description = "The registration token, when a link carries it"),
        ("ticket" = Option<String>, Query, description = "The ticket the 303 carries (signed by us)")
    ),
    responses(
        (status = 200, description = "The signup form (or the account's page once signed up)", content_type = "text/html", body = String),
        (status = 303, description = "Resolved with AWS: to the signup page with our ticket", headers(("location" = String, description = "The signup page with the ticket"))),
        crate::openapi::doc::PageErrors
    )
)]
pub async fn visit(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let entry = entry(&state);
    let query = signup::query_fields(query.as_deref());
    if let Some(token) = signup::non_empty(&query, TOKEN_FIELD) {
        return match resolve(&state, &entry, token).await {
            Ok(verified) => signup::redirect_with_ticket(&state, &entry, &verified),
            Err(refusal) => refusal,
        };
    }
    signup::visit_with_ticket(&state, &entry, &query).await
}

/// `POST {fulfillment_path}/complete`: the submitted signup form.
#[utoipa::path(
    operation_id = "aws_fulfillment_complete",
    post,
    path = "/aws/fulfillment/complete",
    tag = "aws",
    request_body(content = crate::openapi::doc::SignupComplete, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Signed up: the license becomes usable", content_type = "text/html", body = String),
        crate::openapi::doc::PageErrors
    )
)]
pub async fn complete(State(state): State<AppState>, body: Bytes) -> Response {
    signup::complete(&state, &entry(&state), &body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_bodies_carry_the_token() {
        let body = "--x\r\nContent-Disposition: form-data; name=\"x-amzn-marketplace-token\"\r\n\r\ntok+en/1=\r\n--x--\r\n";
        assert_eq!(
            multipart_token(body.as_bytes()).as_deref(),
            Some("tok+en/1=")
        );
        assert_eq!(multipart_token(b"--x--"), None);
    }
}
