//! Calls to the provider's partner API, made the way Vercel makes them:
//! `Authorization: Bearer <OIDC token>`, `X-Vercel-Auth: user|system`,
//! `Idempotency-Key` on mutations, JSON bodies. A successful provisioning
//! makes the resource known to the simulated Vercel API, as it would be at
//! Vercel.

use super::Shared;
use super::state::SimResource;
use reqwest::Method;
use serde_json::Value;
use std::sync::Arc;

/// A client of one provider's partner API.
#[derive(Clone)]
pub struct PartnerClient {
    http: reqwest::Client,
    base_url: String,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PartnerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartnerClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// An answer of the partner API.
#[derive(Debug, Clone)]
pub struct PartnerAnswer {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body as text.
    pub text: String,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
}

impl PartnerAnswer {
    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One call being built.
pub struct PartnerRequest {
    client: PartnerClient,
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl PartnerClient {
    pub(crate) fn new(base_url: &str, shared: Arc<Shared>) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("HTTP client"),
            base_url: base_url.trim_end_matches('/').to_owned(),
            shared,
        }
    }

    /// The Base URL calls go to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// A call of `method` to `path` (below the Base URL, `/v1/...`).
    pub fn request(&self, method: Method, path: &str) -> PartnerRequest {
        PartnerRequest {
            client: self.clone(),
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// A GET.
    pub fn get(&self, path: &str) -> PartnerRequest {
        self.request(Method::GET, path)
    }

    /// A PUT.
    pub fn put(&self, path: &str) -> PartnerRequest {
        self.request(Method::PUT, path)
    }

    /// A POST.
    pub fn post(&self, path: &str) -> PartnerRequest {
        self.request(Method::POST, path)
    }

    /// A PATCH.
    pub fn patch(&self, path: &str) -> PartnerRequest {
        self.request(Method::PATCH, path)
    }

    /// A DELETE.
    pub fn delete(&self, path: &str) -> PartnerRequest {
        self.request(Method::DELETE, path)
    }

    fn remember_provisioned(&self, path: &str, answer: &PartnerAnswer) {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let ["v1", "installations", installation_id, "resources"] = segments.as_slice() else {
            return;
        };
        let body = &answer.body;
        let Some(id) = body["id"].as_str() else {
            return;
        };
        let resource = SimResource {
            id: id.to_owned(),
            product_id: body["productId"].as_str().unwrap_or_default().to_owned(),
            name: body["name"].as_str().unwrap_or_default().to_owned(),
            status: body["status"].as_str().unwrap_or_default().to_owned(),
            metadata: body["metadata"].clone(),
            notification: body.get("notification").cloned().unwrap_or(Value::Null),
            billing_plan_id: body["billingPlan"]["id"].as_str().map(str::to_owned),
            secrets: body["secrets"].as_array().cloned().unwrap_or_default(),
            ..Default::default()
        };
        let mut world = self.shared.world();
        if let Some(installation) = world.installations.get_mut(*installation_id) {
            installation
                .resources
                .entry(id.to_owned())
                .or_insert(resource);
        }
    }
}

impl PartnerRequest {
    /// Authenticates as a user (`X-Vercel-Auth: user`).
    pub fn user(self, token: &str) -> Self {
        self.bearer(token).header("X-Vercel-Auth", "user")
    }

    /// Authenticates as Vercel itself (`X-Vercel-Auth: system`).
    pub fn system(self, token: &str) -> Self {
        self.bearer(token).header("X-Vercel-Auth", "system")
    }

    /// Sets only the bearer token.
    pub fn bearer(self, token: &str) -> Self {
        self.header("Authorization", &format!("Bearer {token}"))
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the `Idempotency-Key`.
    pub fn idempotency_key(self, key: &str) -> Self {
        self.header("Idempotency-Key", key)
    }

    /// A JSON body.
    pub fn json(mut self, body: &Value) -> Self {
        self.body = Some(body.to_string().into_bytes());
        self.headers
            .push(("Content-Type".into(), "application/json".into()));
        self
    }

    /// A body sent as is, labelled JSON (for malformed-input tests).
    pub fn raw(mut self, body: &str) -> Self {
        self.body = Some(body.as_bytes().to_vec());
        self.headers
            .push(("Content-Type".into(), "application/json".into()));
        self
    }

    /// Sends the call.
    pub async fn send(self) -> PartnerAnswer {
        let url = format!("{}{}", self.client.base_url, self.path);
        let mut request = self.client.http.request(self.method.clone(), url);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        if let Some(body) = self.body {
            request = request.body(body);
        }
        let response = request.send().await.expect("the partner API answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        let answer = PartnerAnswer {
            status,
            headers,
            text,
            body,
        };
        if self.method == Method::POST && (200..300).contains(&status) {
            self.client.remember_provisioned(&self.path, &answer);
        }
        answer
    }
}
