//! The signup page Google sends customers to. Google POSTs the signup token;
//! we verify it and answer with a form that carries our own short-lived
//! ticket. Submitting the form records the signup with the account service,
//! which approves the account with Google through its outbox and then lets
//! provisioning approve the entitlements that waited for it.

use super::GoogleAdapter;
use super::pages::{self, FormValues};
use super::ticket::{TICKET_LIFETIME_SECONDS, Ticket, TicketProblem};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use marketbridge_core::crypto::random_token;
use marketbridge_core::{Error, ErrorCode};
use marketbridge_google::signup_token::SIGNUP_TOKEN_FIELD;
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

/// `GET {signup_path}`: a visit without a token.
#[utoipa::path(
    operation_id = "google_signup_visit",
    get,
    path = "/google/signup",
    tag = "google",
    responses(
        (status = 200, description = "A page asking to start from Google Cloud Marketplace", content_type = "text/html", body = String),
        crate::openapi::PageErrors
    )
)]
pub async fn visit() -> Response {
    pages::start_from_marketplace()
}

/// `POST {signup_path}`: Google's form post with the signup token.
#[utoipa::path(
    operation_id = "google_signup_start",
    post,
    path = "/google/signup",
    tag = "google",
    request_body(content = crate::openapi::SignupStart, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The signup form (or the account's page once signed up)", content_type = "text/html", body = String),
        crate::openapi::PageErrors
    )
)]
pub async fn start(State(state): State<AppState>, body: Bytes) -> Response {
    let Some(adapter) = adapter(&state) else {
        return unavailable();
    };
    let Some(verifier) = adapter.signup.as_ref() else {
        return unavailable();
    };
    let fields = form_fields(&body);
    let Some(token) = fields
        .get(SIGNUP_TOKEN_FIELD)
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
    else {
        return pages::start_from_marketplace();
    };
    let claims = match verifier.verify(token).await {
        Ok(claims) => claims,
        Err(rejected) => {
            tracing::warn!(reason = rejected.reason.as_str(), error = %rejected, "signup token refused");
            return match rejected.reason {
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
            };
        }
    };
    let mut accounts = state.clients.account.clone();
    let existing = accounts
        .get_account(account_pb::GetAccountRequest {
            account: Some(AccountSelector::by_ref(
                Marketplace::Google,
                claims.account_id.clone(),
            )),
        })
        .await
        .ok()
        .map(|a| a.into_inner());
    let mut values = FormValues::default();
    if let Some(account) = &existing {
        if account.signup_state == account_pb::SignupState::Approved as i32 {
            let name = account
                .contact
                .as_ref()
                .map(|c| c.name.clone())
                .unwrap_or_default();
            return pages::signed_up(&claims.account_id, &name, true);
        }
        if let Some(contact) = &account.contact {
            values.name = contact.name.clone();
            values.email = contact.email.clone();
        }
        values.company = account.company.clone();
    }
    let ticket = Ticket {
        account: claims.account_id.clone(),
        user: claims.user_identity.clone(),
        roles: claims.roles.clone(),
        orders: claims.orders.clone(),
        exp: adapter.clock.now().timestamp() + TICKET_LIFETIME_SECONDS,
        nonce: random_token(16),
    };
    tracing::info!(google.account = %claims.account_id, "signup token verified; showing the form");
    pages::signup_form(
        StatusCode::OK,
        &format!("{}/complete", adapter.signup_path),
        &adapter.tickets.seal(&ticket),
        &claims.account_id,
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
    request_body(content = crate::openapi::SignupComplete, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Signed up: the account is approved with Google", content_type = "text/html", body = String),
        crate::openapi::PageErrors
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
    let mut accounts = state.clients.account.clone();
    match accounts
        .approve_signup(request.clone())
        .await
        .map_err(Error::from)
    {
        Ok(account) => Ok(account.into_inner()),
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
                .await
                .map_err(Error::from)?;
            accounts
                .approve_signup(request)
                .await
                .map(|a| a.into_inner())
                .map_err(Error::from)
        }
        Err(error) => Err(error),
    }
}
