//! The Vercel REST API client (calls marketbridge makes to Vercel), with the
//! installation's access token. Every call is traced and classified: 429 and
//! 5xx are transient (the outbox retries them), other refusals are not.
//!
//! The calls are grouped by what they touch: [`installations`] (the
//! installation, its account and members, events, its token),
//! [`resources`] (resources, secrets, project connections), [`billing`]
//! (usage, invoices, refunds, balances, finalization) and [`sso`].

pub mod billing;
pub mod credentials;
pub mod installations;
pub mod resources;
pub mod sso;

use marketbridge_core::crypto::SecretString;
use marketbridge_core::{Error, ErrorCode, Result};
use marketbridge_rpc::http::{HttpAnswer, error_for_status, retry_after_seconds, send_traced};
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Client of the Vercel API at one base URL.
#[derive(Debug, Clone)]
pub struct VercelApi {
    http: reqwest::Client,
    base_url: String,
    peer: String,
}

impl VercelApi {
    /// A client of the API at `base_url` (`https://api.vercel.com`).
    pub fn new(http: reqwest::Client, base_url: &str) -> Self {
        let base_url = base_url.trim_end_matches('/').to_owned();
        let peer = base_url
            .split("://")
            .nth(1)
            .unwrap_or(&base_url)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        Self {
            http,
            base_url,
            peer,
        }
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends one call. `route` is the path template (for metrics and spans);
    /// `path` the concrete path. A non-2xx answer is an error; the answer is
    /// returned otherwise.
    pub async fn call(
        &self,
        token: &SecretString,
        method: Method,
        route: &str,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<HttpAnswer> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base_url))
            .bearer_auth(token.expose());
        if let Some(body) = body {
            request = request.json(body);
        }
        let answer = send_traced(request, &self.peer, route).await?;
        if !(200..300).contains(&answer.status) {
            let vercel_id = answer
                .headers
                .get("x-vercel-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            tracing::warn!(status = answer.status, x_vercel_id = %vercel_id, route, "vercel api refused a call");
            return Err(refusal(&answer, &method, route));
        }
        Ok(answer)
    }

    /// Sends one call and reads its JSON answer.
    pub async fn call_json<T: DeserializeOwned>(
        &self,
        token: &SecretString,
        method: Method,
        route: &str,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T> {
        let answer = self.call(token, method, route, path, body).await?;
        answer.json()
    }

    /// Sends a call that needs no token (SSO token exchange).
    pub async fn call_unauthenticated(
        &self,
        method: Method,
        route: &str,
        path: &str,
        body: &(impl Serialize + ?Sized),
    ) -> Result<HttpAnswer> {
        let request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base_url))
            .json(body);
        let answer = send_traced(request, &self.peer, route).await?;
        if !(200..300).contains(&answer.status) {
            return Err(refusal(&answer, &method, route));
        }
        Ok(answer)
    }
}

/// The error a non-2xx answer stands for. The `Retry-After` of a 429 is
/// kept in the message so operators see it; a 410 is terminal
/// ([`credentials::is_gone`]).
pub(crate) fn refusal(answer: &HttpAnswer, method: &Method, route: &str) -> Error {
    if answer.status == 410 {
        return credentials::gone_error(&format!("Vercel {method} {route}"), &answer.text());
    }
    let error = error_for_status(answer, &format!("Vercel {method} {route}"));
    match retry_after_seconds(answer) {
        Some(seconds) if error.code() == ErrorCode::RateLimited => Error::new(
            ErrorCode::RateLimited,
            format!("{} (retry after {seconds} s)", error.message()),
        ),
        _ => error,
    }
}

/// The empty body of calls that send none.
pub(crate) const NO_BODY: Option<&()> = None;

/// Validates a Vercel id before it goes into a URL path.
pub fn path_segment(field: &str, value: &str) -> Result<String> {
    if value.is_empty()
        || value.len() > 255
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(Error::invalid_field(field, "is not a valid Vercel id"));
    }
    Ok(value.to_owned())
}
