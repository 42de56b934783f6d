//! Calls to Google APIs with an OAuth access token. Every call is traced and
//! classified: 429 and 5xx are transient (the outbox retries them), other
//! refusals are not.

use async_trait::async_trait;
use marketbridge_core::Result;
use marketbridge_core::crypto::SecretString;
use marketbridge_rpc::http::{HttpAnswer, error_for_status, send_traced};
use reqwest::Method;
use serde::Serialize;
use std::sync::Arc;

/// Hands out access tokens for Google APIs.
#[async_trait]
pub trait AccessTokens: Send + Sync + 'static {
    /// A valid access token (cached until shortly before it expires).
    async fn access_token(&self) -> Result<SecretString>;

    /// Forgets the cached token (Google refused it); the next call gets a
    /// fresh one.
    async fn invalidate(&self) {}
}

/// Client of one Google API at one base URL.
#[derive(Clone)]
pub struct GoogleApi {
    http: reqwest::Client,
    base_url: String,
    peer: String,
    tokens: Arc<dyn AccessTokens>,
}

impl std::fmt::Debug for GoogleApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleApi")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl GoogleApi {
    /// A client of the API at `base_url`.
    pub fn new(http: reqwest::Client, base_url: &str, tokens: Arc<dyn AccessTokens>) -> Self {
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
            tokens,
        }
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends one call and returns the answer, whatever its status. A `401`
    /// (a revoked or expired token) is retried once with a fresh token.
    pub async fn send(
        &self,
        method: Method,
        route: &str,
        path_and_query: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<HttpAnswer> {
        let answer = self
            .send_once(method.clone(), route, path_and_query, body)
            .await?;
        if answer.status != 401 {
            return Ok(answer);
        }
        tracing::info!(route, "Google refused the access token; renewing it");
        self.tokens.invalidate().await;
        self.send_once(method, route, path_and_query, body).await
    }

    async fn send_once(
        &self,
        method: Method,
        route: &str,
        path_and_query: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<HttpAnswer> {
        let token = self.tokens.access_token().await?;
        let mut request = self
            .http
            .request(method, format!("{}{path_and_query}", self.base_url))
            .bearer_auth(token.expose());
        if let Some(body) = body {
            request = request.json(body);
        }
        send_traced(request, &self.peer, route).await
    }

    /// Sends one call; a non-2xx answer is an error.
    pub async fn call(
        &self,
        method: Method,
        route: &str,
        path_and_query: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<HttpAnswer> {
        let answer = self
            .send(method.clone(), route, path_and_query, body)
            .await?;
        if !(200..300).contains(&answer.status) {
            return Err(error_for_status(
                &answer,
                &format!("Google {method} {route}"),
            ));
        }
        Ok(answer)
    }
}
