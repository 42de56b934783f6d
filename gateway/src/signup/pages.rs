//! The HTML of the signup flow: the form, the confirmation, and the pages
//! that explain what went wrong, worded for the marketplace the customer
//! came from. Every value shown is escaped.

use super::Wording;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            _ => escaped.push(c),
        }
    }
    escaped
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 36rem; margin: 3rem auto; padding: 0 1rem; color: #202124; }}
h1 {{ font-size: 1.5rem; }}
label {{ display: block; margin-top: 1rem; font-weight: 600; }}
input[type=text], input[type=email] {{ width: 100%; padding: .5rem; margin-top: .25rem; box-sizing: border-box; }}
button {{ margin-top: 1.5rem; padding: .6rem 1.2rem; font-size: 1rem; }}
.error {{ color: #b3261e; }}
.note {{ color: #5f6368; font-size: .9rem; }}
</style>
</head>
<body>
<h1>{title}</h1>
{body}
</body>
</html>
"#,
        title = escape(title),
    );
    let mut response = (status, Html(html)).into_response();
    response.headers_mut().insert(
        "cache-control",
        axum::http::HeaderValue::from_static("no-store"),
    );
    response.headers_mut().insert(
        "referrer-policy",
        axum::http::HeaderValue::from_static("no-referrer"),
    );
    response
}

/// What the form shows.
#[derive(Debug, Clone, Default)]
pub struct FormValues {
    /// The person's name.
    pub name: String,
    /// Their e-mail address.
    pub email: String,
    /// Their company.
    pub company: String,
}

/// The signup form, with the ticket as a hidden field and any field errors.
pub fn signup_form(
    wording: &Wording,
    status: StatusCode,
    action: &str,
    ticket: &str,
    account_id: &str,
    values: &FormValues,
    errors: &[(String, String)],
) -> Response {
    let error_for = |field: &str| {
        errors
            .iter()
            .filter(|(f, _)| f == field)
            .map(|(_, message)| format!(r#"<div class="error">{}</div>"#, escape(message)))
            .collect::<String>()
    };
    let general: String = errors
        .iter()
        .filter(|(f, _)| !["name", "email", "company"].contains(&f.as_str()))
        .map(|(_, message)| format!(r#"<p class="error">{}</p>"#, escape(message)))
        .collect();
    let body = format!(
        r#"<p>You bought our product on {marketplace}. Tell us who you are to finish setting up your account.</p>
<p class="note">{account_label}: <code>{account}</code></p>
{general}
<form method="post" action="{action}">
<input type="hidden" name="ticket" value="{ticket}">
<label for="name">Your name</label>
<input type="text" id="name" name="name" value="{name}" required maxlength="256" autocomplete="name">
{name_error}
<label for="email">E-mail address</label>
<input type="email" id="email" name="email" value="{email}" required maxlength="320" autocomplete="email">
{email_error}
<label for="company">Company</label>
<input type="text" id="company" name="company" value="{company}" maxlength="256" autocomplete="organization">
{company_error}
<button type="submit">Create my account</button>
</form>"#,
        marketplace = escape(wording.marketplace),
        account_label = escape(wording.account),
        account = escape(account_id),
        action = escape(action),
        ticket = escape(ticket),
        name = escape(&values.name),
        email = escape(&values.email),
        company = escape(&values.company),
        name_error = error_for("name"),
        email_error = error_for("email"),
        company_error = error_for("company"),
    );
    page(status, "Finish signing up", &body)
}

/// The page after a successful signup.
pub fn signed_up(wording: &Wording, account_id: &str, name: &str, approved: bool) -> Response {
    let state = if approved {
        "Your account is approved and your purchase is being activated.".to_owned()
    } else {
        format!(
            "Your account is being approved with {}; your purchase will be activated right after.",
            wording.marketplace
        )
    };
    let body = format!(
        r#"<p>Thank you, {name}. {state}</p>
<p class="note">{account_label}: <code>{account}</code>. You can close this page and return to {console}.</p>"#,
        name = escape(name),
        state = escape(&state),
        account_label = escape(wording.account),
        account = escape(account_id),
        console = escape(wording.console),
    );
    page(StatusCode::OK, "You are signed up", &body)
}

/// A problem page with a status.
pub fn problem(wording: &Wording, status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        r#"<p class="error">{}</p>
<p class="note">{}</p>"#,
        escape(message),
        wording.fresh_link_html,
    );
    page(status, title, &body)
}

/// The page for a plain visit without a token.
pub fn start_from_marketplace(wording: &Wording) -> Response {
    let body = format!(
        r#"<p>This page is where {} sends you after a purchase.</p>
<p class="note">{}</p>"#,
        escape(wording.marketplace),
        wording.fresh_link_html,
    );
    page(
        StatusCode::BAD_REQUEST,
        &format!("Start from {}", wording.marketplace),
        &body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_shown_is_escaped() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
