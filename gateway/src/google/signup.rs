//! The signup page Google sends customers to. Google POSTs the signup token
//! (or puts it in the query string of the signup URL); we verify it and
//! answer with a form that carries our own short-lived ticket. A token that
//! came in the URL is taken out of it at once: a 303 to the same page with
//! only our ticket, so it stays out of history, `Referer` and access logs. Submitting the form records the signup with the account service,
//! which approves the account with Google through its outbox and then lets
//! provisioning approve the entitlements that waited for it.

use super::pages::{self, FormValues};
use super::state::GoogleAdapter;
use super::ticket::{TICKET_LIFETIME_SECONDS, Ticket, TicketProblem};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use marketbridge_core::crypto::random_token;
use marketbridge_core::{Error, ErrorCode};
use marketbridge_google::signup_token::{SIGNUP_TOKEN_FIELD, SignupClaims};
use marketbridge_google::token::RejectReason;
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::common::v1::{
    AccountSelector, Marketplace, MarketplaceRef, Person, RequestContext,
};
use std::collections::HashMap;

fn form_fields(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn adapter(state: &AppState) -> Option<&GoogleAdapter> {
    state.google.adapter()
}

fn unavailable() -> Response {
    pages::problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "Signup is temporarily unavailable",
        "We could not complete this step right now. Please try again in a minute.",
    )
}

/// The query parameter carrying our sealed ticket on the clean signup URL.
const TICKET_PARAM: &str = "ticket";

fn query_fields(query: Option<&str>) -> HashMap<String, String> {
    form_fields(query.unwrap_or_default().as_bytes())
}

/// The non-empty value of `name` in `fields`.
fn non_empty<'a>(fields: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    fields
        .get(name)
        .map(|value| value.trim())
        .filter(|value| !value.is_empty())
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
    let Some(adapter) = adapter(&state) else {
        return unavailable();
    };
    let query = query_fields(query.as_deref());
    if let Some(token) = non_empty(&query, SIGNUP_TOKEN_FIELD) {
        return match verify(adapter, token).await {
            Ok(claims) => redirect_with_ticket(adapter, &claims),
            Err(refusal) => refusal,
        };
    }
    let Some(sealed) = non_empty(&query, TICKET_PARAM) else {
        return pages::start_from_marketplace();
    };
    match adapter.tickets.open(sealed, adapter.clock.now()) {
        Ok(ticket) => show_form(&state, adapter, &ticket, sealed).await,
        Err(TicketProblem::Expired) => pages::problem(
            StatusCode::UNAUTHORIZED,
            "This signup link has expired",
            "The signup page was open for too long.",
        ),
        Err(TicketProblem::Invalid) => {
            tracing::warn!("signup page with an invalid ticket refused");
            pages::problem(
                StatusCode::BAD_REQUEST,
                "This signup link is not valid",
                "The link was altered or did not come from us.",
            )
        }
    }
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
    let Some(adapter) = adapter(&state) else {
        return unavailable();
    };
    let fields = form_fields(&body);
    let query = query_fields(query.as_deref());
    let in_form = non_empty(&fields, SIGNUP_TOKEN_FIELD);
    let in_query = non_empty(&query, SIGNUP_TOKEN_FIELD);
    let token = match (in_form, in_query) {
        (Some(form), Some(url)) if form != url => {
            tracing::warn!("signup with two different tokens refused");
            return pages::problem(
                StatusCode::BAD_REQUEST,
                "This signup link is not valid",
                "The request carried two different signup tokens.",
            );
        }
        (Some(token), _) | (None, Some(token)) => token,
        (None, None) => return pages::start_from_marketplace(),
    };
    let claims = match verify(adapter, token).await {
        Ok(claims) => claims,
        Err(refusal) => return refusal,
    };
    if in_query.is_some() {
        return redirect_with_ticket(adapter, &claims);
    }
    let ticket = issue_ticket(adapter, &claims);
    let sealed = adapter.tickets.seal(&ticket);
    show_form(&state, adapter, &ticket, &sealed).await
}

/// Verifies a signup token, whatever carried it; a refusal is the page to
/// answer with. The token itself is never logged.
async fn verify(adapter: &GoogleAdapter, token: &str) -> Result<SignupClaims, Response> {
    let Some(verifier) = adapter.signup.as_ref() else {
        return Err(unavailable());
    };
    match verifier.verify(token).await {
        Ok(claims) => {
            tracing::info!(google.account = %claims.account_id, "signup token verified");
            Ok(claims)
        }
        Err(rejected) => {
            tracing::warn!(reason = rejected.reason.as_str(), error = %rejected, "signup token refused");
            Err(match rejected.reason {
                RejectReason::Expired => pages::problem(
                    StatusCode::UNAUTHORIZED,
                    "This signup link has expired",
                    "The link from Google Cloud Marketplace is only valid for a few minutes.",
                ),
                RejectReason::KeysUnavailable => unavailable(),
                _ => pages::problem(
                    StatusCode::UNAUTHORIZED,
                    "This signup link is not valid",
                    "We could not verify that this request came from Google Cloud Marketplace for this product.",
                ),
            })
        }
    }
}

/// A fresh ticket for what a verified token proved.
fn issue_ticket(adapter: &GoogleAdapter, claims: &SignupClaims) -> Ticket {
    Ticket {
        account: claims.account_id.clone(),
        user: claims.user_identity.clone(),
        roles: claims.roles.clone(),
        orders: claims.orders.clone(),
        exp: adapter.clock.now().timestamp() + TICKET_LIFETIME_SECONDS,
        nonce: random_token(16),
    }
}

/// A 303 to the signup page carrying our ticket, so the Google token leaves
/// the address bar (and history, and `Referer`) at once.
fn redirect_with_ticket(adapter: &GoogleAdapter, claims: &SignupClaims) -> Response {
    let sealed = adapter.tickets.seal(&issue_ticket(adapter, claims));
    let location = format!(
        "{}?{}",
        adapter.signup_path,
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair(TICKET_PARAM, &sealed)
            .finish()
    );
    let Ok(location) = HeaderValue::from_str(&location) else {
        return unavailable();
    };
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    tracing::info!(google.account = %claims.account_id, "signup token taken out of the address; redirecting to the form");
    response
}

/// The signup form for a ticket, or the account's page once signed up.
async fn show_form(
    state: &AppState,
    adapter: &GoogleAdapter,
    ticket: &Ticket,
    sealed: &str,
) -> Response {
    let existing = state
        .accounts
        .get_account(account_pb::GetAccountRequest {
            account: Some(AccountSelector::by_ref(
                Marketplace::Google,
                ticket.account.clone(),
            )),
        })
        .await
        .ok();
    let mut values = FormValues::default();
    if let Some(account) = &existing {
        if account.signup_state == account_pb::SignupState::Approved as i32 {
            let name = account
                .contact
                .as_ref()
                .map(|c| c.name.clone())
                .unwrap_or_default();
            return pages::signed_up(&ticket.account, &name, true);
        }
        if let Some(contact) = &account.contact {
            values.name = contact.name.clone();
            values.email = contact.email.clone();
        }
        values.company = account.company.clone();
    }
    pages::signup_form(
        StatusCode::OK,
        &format!("{}/complete", adapter.signup_path),
        sealed,
        &ticket.account,
        &values,
        &[],
    )
}

fn validate(values: &FormValues) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    if values.name.is_empty() {
        errors.push(("name".into(), "Please enter your name.".into()));
    } else if values.name.chars().count() > 256 {
        errors.push(("name".into(), "Please use at most 256 characters.".into()));
    }
    let email_ok = values.email.len() <= 320
        && values.email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        });
    if !email_ok {
        errors.push((
            "email".into(),
            "Please enter a valid e-mail address.".into(),
        ));
    }
    if values.company.chars().count() > 256 {
        errors.push((
            "company".into(),
            "Please use at most 256 characters.".into(),
        ));
    }
    errors
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
    let Some(adapter) = adapter(&state) else {
        return unavailable();
    };
    let fields = form_fields(&body);
    let sealed = fields.get("ticket").cloned().unwrap_or_default();
    let ticket = match adapter.tickets.open(&sealed, adapter.clock.now()) {
        Ok(ticket) => ticket,
        Err(TicketProblem::Expired) => {
            return pages::problem(
                StatusCode::UNAUTHORIZED,
                "This signup form has expired",
                "The form was open for too long.",
            );
        }
        Err(TicketProblem::Invalid) => {
            tracing::warn!("signup form with an invalid ticket refused");
            return pages::problem(
                StatusCode::BAD_REQUEST,
                "This signup form is not valid",
                "The form was altered or did not come from us.",
            );
        }
    };
    let values = FormValues {
        name: fields
            .get("name")
            .map(|v| v.trim().to_owned())
            .unwrap_or_default(),
        email: fields
            .get("email")
            .map(|v| v.trim().to_owned())
            .unwrap_or_default(),
        company: fields
            .get("company")
            .map(|v| v.trim().to_owned())
            .unwrap_or_default(),
    };
    let action = format!("{}/complete", adapter.signup_path);
    let errors = validate(&values);
    if !errors.is_empty() {
        return pages::signup_form(
            StatusCode::BAD_REQUEST,
            &action,
            &sealed,
            &ticket.account,
            &values,
            &errors,
        );
    }
    match approve(&state, &ticket, &values).await {
        Ok(account) => {
            tracing::info!(account.id = %account.id, google.account = %ticket.account, "google signup completed");
            pages::signed_up(
                &ticket.account,
                &values.name,
                account.signup_state == account_pb::SignupState::Approved as i32,
            )
        }
        Err(error) if error.code() == ErrorCode::IdempotencyKeyReused => pages::problem(
            StatusCode::CONFLICT,
            "This signup form was already used",
            "Each signup form can be sent once. Open the signup link from Google Cloud Marketplace again.",
        ),
        Err(error) if error.code() == ErrorCode::Unprocessable => pages::problem(
            StatusCode::CONFLICT,
            "This account has already signed up",
            "The signup of this Google Cloud Marketplace account was already accepted.",
        ),
        Err(error) if error.code() == ErrorCode::Conflict => pages::problem(
            StatusCode::CONFLICT,
            "This account is closed",
            "This Google Cloud Marketplace account was deleted and cannot sign up again.",
        ),
        Err(error) if error.code() == ErrorCode::Validation => {
            let errors: Vec<(String, String)> = if error.fields().is_empty() {
                vec![("form".into(), error.message().to_owned())]
            } else {
                error
                    .fields()
                    .iter()
                    .map(|f| {
                        (
                            f.field.trim_start_matches("person.").to_owned(),
                            f.message.clone(),
                        )
                    })
                    .collect()
            };
            pages::signup_form(
                StatusCode::BAD_REQUEST,
                &action,
                &sealed,
                &ticket.account,
                &values,
                &errors,
            )
        }
        Err(error) => {
            tracing::warn!(google.account = %ticket.account, error = %error, "google signup could not be recorded");
            unavailable()
        }
    }
}

/// Records the signup; creates the account first when no notification
/// announced it yet.
async fn approve(
    state: &AppState,
    ticket: &Ticket,
    values: &FormValues,
) -> Result<account_pb::Account, Error> {
    let person = Person {
        external_id: ticket.user.clone().unwrap_or_default(),
        email: values.email.clone(),
        name: values.name.clone(),
        role: ticket.roles.first().cloned().unwrap_or_default(),
        last_seen_at: None,
    };
    // One key per ticket: the same submission again is a replay, any other
    // submission with a used ticket is refused.
    let request = account_pb::ApproveSignupRequest {
        context: Some(RequestContext {
            idempotency_key: format!("google:{}:signup:{}", ticket.account, ticket.nonce),
            actor: Some(person.clone()),
        }),
        account: Some(AccountSelector::by_ref(
            Marketplace::Google,
            ticket.account.clone(),
        )),
        person: Some(person),
        company: values.company.clone(),
    };
    let accounts = &state.accounts;
    match accounts.approve_signup(request.clone()).await {
        Err(error) if error.code() == ErrorCode::NotFound => {
            accounts
                .upsert_account(account_pb::UpsertAccountRequest {
                    marketplace_ref: Some(MarketplaceRef::new(
                        Marketplace::Google,
                        ticket.account.clone(),
                    )),
                    signup_required: true,
                    ..Default::default()
                })
                .await?;
            accounts.approve_signup(request).await
        }
        answer => answer,
    }
}
