//! The signup page every marketplace that sends buyers to us shares
//! (Google's signup URL, AWS's fulfillment URL, Azure's landing page).
//!
//! Each marketplace's own module proves who the buyer is — Google's signed
//! JWT verified here, AWS's and Azure's purchase tokens resolved by the
//! account service with the marketplace — and hands a [`Verified`] to
//! [`redirect_with_ticket`] (or [`show_verified`]). From there the flow is
//! the same for all: our own sealed ticket (HMAC, naming the marketplace,
//! 30 minutes) carries what was proved through a 303 to
//! `{entry path}?ticket=…` so the marketplace's token leaves the address bar,
//! the form asks who the buyer is, and `POST {entry path}/complete` records
//! the signup with `ApproveSignup`; the account service approves (Google),
//! activates (Azure) or simply accepts (AWS) it with the marketplace through
//! its outbox.

pub mod pages;
pub mod ticket;

use crate::state::AppState;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use marketbridge_core::{Error, ErrorCode, Marketplace};
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::common::v1::{
    AccountSelector, Marketplace as ProtoMarketplace, MarketplaceRef, Person, RequestContext,
};
use pages::FormValues;
use std::collections::HashMap;
pub use ticket::{SignupTickets, Verified};
use ticket::{Ticket, TicketProblem};

/// How the pages name a marketplace and what they tell a buyer to do.
#[derive(Debug)]
pub struct Wording {
    /// The marketplace's name (`Google Cloud Marketplace`).
    pub marketplace: &'static str,
    /// What the account id shown is (`Google Cloud account`).
    pub account: &'static str,
    /// Where the buyer goes back to (`the Google Cloud console`).
    pub console: &'static str,
    /// How to get a fresh link, as trusted HTML.
    pub fresh_link_html: &'static str,
}

/// One marketplace's way into the signup page.
#[derive(Debug, Clone)]
pub struct SignupEntry {
    /// The marketplace.
    pub marketplace: Marketplace,
    /// The page's path (the marketplace's configured signup, fulfillment or
    /// landing path); the form posts to `{path}/complete`.
    pub path: String,
    /// How the pages speak of it.
    pub wording: &'static Wording,
}

impl SignupEntry {
    fn proto_marketplace(&self) -> ProtoMarketplace {
        ProtoMarketplace::try_from(self.marketplace.to_proto())
            .unwrap_or(ProtoMarketplace::Unspecified)
    }

    fn complete_path(&self) -> String {
        format!("{}/complete", self.path)
    }

    /// A problem page worded for this marketplace.
    pub fn problem(&self, status: StatusCode, title: &str, message: &str) -> Response {
        pages::problem(self.wording, status, title, message)
    }

    /// The page for a signup that cannot go on right now.
    pub fn unavailable(&self) -> Response {
        self.problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Signup is temporarily unavailable",
            "We could not complete this step right now. Please try again in a minute.",
        )
    }

    /// The page for a visit that brought no token and no ticket.
    pub fn start_from_marketplace(&self) -> Response {
        pages::start_from_marketplace(self.wording)
    }
}

/// The query parameter carrying our sealed ticket on the clean page URL.
pub const TICKET_PARAM: &str = "ticket";

/// The fields of a form body or query string.
pub fn form_fields(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The fields of a query string.
pub fn query_fields(query: Option<&str>) -> HashMap<String, String> {
    form_fields(query.unwrap_or_default().as_bytes())
}

/// The non-empty, trimmed value of `name` in `fields`.
pub fn non_empty<'a>(fields: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    fields
        .get(name)
        .map(|value| value.trim())
        .filter(|value| !value.is_empty())
}

/// A 303 to the entry's page carrying a fresh ticket for `verified`, so
/// the marketplace's token leaves the address bar (and history, and
/// `Referer`) at once.
pub fn redirect_with_ticket(
    state: &AppState,
    entry: &SignupEntry,
    verified: &Verified,
) -> Response {
    let (_, sealed) = state.signup.issue(entry.marketplace, verified);
    let location = format!(
        "{}?{}",
        entry.path,
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair(TICKET_PARAM, &sealed)
            .finish()
    );
    let Ok(location) = HeaderValue::from_str(&location) else {
        return entry.unavailable();
    };
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    tracing::info!(marketplace = %entry.marketplace, marketplace.account = %verified.account, "marketplace token taken out of the address; redirecting to the form");
    response
}

/// The form for `verified` at once, with a fresh ticket (the token came in
/// a POST body, so no address holds it).
pub async fn show_verified(state: &AppState, entry: &SignupEntry, verified: &Verified) -> Response {
    let (ticket, sealed) = state.signup.issue(entry.marketplace, verified);
    show_form(state, entry, &ticket, &sealed).await
}

/// `GET {path}?ticket=…`: the form for a ticket issued on this page; a
/// visit without one is told to start from the marketplace.
pub async fn visit_with_ticket(
    state: &AppState,
    entry: &SignupEntry,
    query: &HashMap<String, String>,
) -> Response {
    let Some(sealed) = non_empty(query, TICKET_PARAM) else {
        return entry.start_from_marketplace();
    };
    match state.signup.open(entry.marketplace, sealed) {
        Ok(ticket) => show_form(state, entry, &ticket, sealed).await,
        Err(TicketProblem::Expired) => entry.problem(
            StatusCode::UNAUTHORIZED,
            "This signup link has expired",
            "The signup page was open for too long.",
        ),
        Err(TicketProblem::Invalid) => {
            tracing::warn!(marketplace = %entry.marketplace, "signup page with an invalid ticket refused");
            entry.problem(
                StatusCode::BAD_REQUEST,
                "This signup link is not valid",
                "The link was altered or did not come from us.",
            )
        }
    }
}

/// The signup form for a ticket, or the account's page once signed up.
async fn show_form(
    state: &AppState,
    entry: &SignupEntry,
    ticket: &Ticket,
    sealed: &str,
) -> Response {
    let existing = state
        .accounts
        .get_account(account_pb::GetAccountRequest {
            account: Some(AccountSelector::by_ref(
                entry.proto_marketplace(),
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
            return pages::signed_up(entry.wording, &ticket.account, &name, true);
        }
        if let Some(contact) = &account.contact {
            values.name = contact.name.clone();
            values.email = contact.email.clone();
        }
        values.company = account.company.clone();
    }
    pages::signup_form(
        entry.wording,
        StatusCode::OK,
        &entry.complete_path(),
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

/// `POST {path}/complete`: the submitted form.
pub async fn complete(state: &AppState, entry: &SignupEntry, body: &[u8]) -> Response {
    let fields = form_fields(body);
    let sealed = fields.get(TICKET_PARAM).cloned().unwrap_or_default();
    let ticket = match state.signup.open(entry.marketplace, &sealed) {
        Ok(ticket) => ticket,
        Err(TicketProblem::Expired) => {
            return entry.problem(
                StatusCode::UNAUTHORIZED,
                "This signup form has expired",
                "The form was open for too long.",
            );
        }
        Err(TicketProblem::Invalid) => {
            tracing::warn!(marketplace = %entry.marketplace, "signup form with an invalid ticket refused");
            return entry.problem(
                StatusCode::BAD_REQUEST,
                "This signup form is not valid",
                "The form was altered or did not come from us.",
            );
        }
    };
    let field = |name: &str| {
        fields
            .get(name)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let values = FormValues {
        name: field("name"),
        email: field("email"),
        company: field("company"),
    };
    let action = entry.complete_path();
    let errors = validate(&values);
    if !errors.is_empty() {
        return pages::signup_form(
            entry.wording,
            StatusCode::BAD_REQUEST,
            &action,
            &sealed,
            &ticket.account,
            &values,
            &errors,
        );
    }
    let marketplace = entry.wording.marketplace;
    match approve(state, entry, &ticket, &values).await {
        Ok(account) => {
            tracing::info!(account.id = %account.id, marketplace = %entry.marketplace, marketplace.account = %ticket.account, "signup completed");
            pages::signed_up(
                entry.wording,
                &ticket.account,
                &values.name,
                account.signup_state == account_pb::SignupState::Approved as i32,
            )
        }
        Err(error) if error.code() == ErrorCode::IdempotencyKeyReused => entry.problem(
            StatusCode::CONFLICT,
            "This signup form was already used",
            &format!("Each signup form can be sent once. Open the link from {marketplace} again."),
        ),
        Err(error) if error.code() == ErrorCode::Unprocessable => entry.problem(
            StatusCode::CONFLICT,
            "This account has already signed up",
            &format!("The signup of this {marketplace} account was already accepted."),
        ),
        Err(error) if error.code() == ErrorCode::Conflict => entry.problem(
            StatusCode::CONFLICT,
            "This account is closed",
            &format!("This {marketplace} account was deleted and cannot sign up again."),
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
                entry.wording,
                StatusCode::BAD_REQUEST,
                &action,
                &sealed,
                &ticket.account,
                &values,
                &errors,
            )
        }
        Err(error) => {
            tracing::warn!(marketplace = %entry.marketplace, marketplace.account = %ticket.account, error = %error, "signup could not be recorded");
            entry.unavailable()
        }
    }
}

/// Records the signup; creates the account first when no notification
/// announced it yet.
async fn approve(
    state: &AppState,
    entry: &SignupEntry,
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
            idempotency_key: format!(
                "{}:{}:signup:{}",
                entry.marketplace, ticket.account, ticket.nonce
            ),
            actor: Some(person.clone()),
        }),
        account: Some(AccountSelector::by_ref(
            entry.proto_marketplace(),
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
                        entry.proto_marketplace(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_is_validated() {
        let good = FormValues {
            name: "Ada".into(),
            email: "ada@example.com".into(),
            company: String::new(),
        };
        assert!(validate(&good).is_empty());
        let bad = FormValues {
            name: String::new(),
            email: "ada@".into(),
            company: "x".repeat(257),
        };
        let fields: Vec<_> = validate(&bad).into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["name", "email", "company"]);
    }
}
