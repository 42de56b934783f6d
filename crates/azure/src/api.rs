//! Calls to the Marketplace APIs: a bearer token on every call,
//! `api-version=2018-08-31`, a fresh `x-ms-requestid` per call and the
//! caller's `x-ms-correlationid` (both logged with the answer's echo). A
//! `401` is retried once with a new token; statuses are classified by
//! [`marketbridge_rpc::http::error_for_status`] (429 and 5xx transient).

use crate::token::{AccessTokens, peer_of};
use marketbridge_core::Result;
use marketbridge_rpc::http::{HttpAnswer, error_for_status, send_traced};
use reqwest::Method;
use serde::Serialize;
use std::sync::Arc;

/// The API version of every call.
pub const API_VERSION: &str = "2018-08-31";

/// Extra headers of one call.
#[derive(Debug, Clone, Default)]
pub struct CallOptions<'a> {
    /// `x-ms-correlationid`; a fresh one when `None`.
    pub correlation_id: Option<&'a str>,
    /// `x-ms-marketplace-token` (Resolve only).
    pub marketplace_token: Option<&'a str>,
}

/// Client of one Marketplace API at one base URL.
#[derive(Clone)]
pub struct AzureApi {
    http: reqwest::Client,
    base_url: String,
    peer: String,
    tokens: Arc<dyn AccessTokens>,
}

impl std::fmt::Debug for AzureApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureApi")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl AzureApi {
    /// A client of the API at `base_url` (ending in `/api`).
    pub fn new(http: reqwest::Client, base_url: &str, tokens: Arc<dyn AccessTokens>) -> Self {
        let base_url = base_url.trim().trim_end_matches('/').to_owned();
        Self {
            peer: peer_of(&base_url),
            http,
            base_url,
            tokens,
        }
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `path` (starting with `/`) with the API version appended, or an
    /// absolute URL Microsoft handed us (`@nextLink`, `Operation-Location`)
    /// as it is.
    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            return path.to_owned();
        }
        let separator = if path.contains('?') { '&' } else { '?' };
        format!(
            "{}{path}{separator}api-version={API_VERSION}",
            self.base_url
        )
    }

    /// Sends one call and returns the answer, whatever its status.
    pub async fn send(
        &self,
        method: Method,
        route: &str,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        options: &CallOptions<'_>,
    ) -> Result<HttpAnswer> {
        let correlation_id = options
            .correlation_id
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let answer = self
            .send_once(method.clone(), route, path, body, options, &correlation_id)
            .await?;
        if answer.status != 401 {
            return Ok(answer);
        }
        tracing::info!(route, "Microsoft refused the access token; renewing it");
        self.tokens.invalidate().await;
        self.send_once(method, route, path, body, options, &correlation_id)
            .await
    }

    async fn send_once(
        &self,
        method: Method,
        route: &str,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        options: &CallOptions<'_>,
        correlation_id: &str,
    ) -> Result<HttpAnswer> {
        let token = self.tokens.access_token().await?;
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut request = self
            .http
            .request(method.clone(), self.url(path))
            .bearer_auth(token.expose())
            .header("content-type", "application/json")
            .header("x-ms-requestid", &request_id)
            .header("x-ms-correlationid", correlation_id);
        if let Some(marketplace_token) = options.marketplace_token {
            request = request.header("x-ms-marketplace-token", marketplace_token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let answer = send_traced(request, &self.peer, route).await?;
        let echoed = |name: &str| {
            answer
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        tracing::debug!(
            azure.request_id = %echoed("x-ms-requestid"),
            azure.correlation_id = %echoed("x-ms-correlationid"),
            sent_request_id = %request_id,
            status = answer.status,
            "{method} {route}"
        );
        Ok(answer)
    }

    /// Sends one call; a non-2xx answer is an error.
    pub async fn call(
        &self,
        method: Method,
        route: &str,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        options: &CallOptions<'_>,
    ) -> Result<HttpAnswer> {
        let answer = self
            .send(method.clone(), route, path, body, options)
            .await?;
        if !(200..300).contains(&answer.status) {
            return Err(error_for_status(
                &answer,
                &format!("Azure Marketplace {method} {route}"),
            ));
        }
        Ok(answer)
    }
}
