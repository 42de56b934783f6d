//! Vercel's calls to the partner API through the gateway, with tokens the
//! Vercel simulator signs (so the gateway verifies real signatures).

use marketbridge_simulators::vercel::{InstallationHandle, VercelSimulator};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

/// An HTTP client holding one keep-alive connection.
pub fn connection() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// How a call authenticates: `X-Vercel-Auth` and the bearer token.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    /// A team member (`X-Vercel-Auth: user`).
    User(&'a str),
    /// Vercel itself (`X-Vercel-Auth: system`).
    System(&'a str),
}

/// Sends one call; any answer other than 2xx is an error carrying its body.
/// Returns the body as JSON (`Null` when empty).
pub async fn call(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    auth: Auth<'_>,
    idempotency_key: Option<&str>,
    body: Option<&Value>,
) -> Result<Value, String> {
    let text = send(http, method.clone(), url, auth, idempotency_key, body).await?;
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| format!("{method} {url}: not JSON ({e}): {text}"))
}

/// [`call`] without reading the answer as JSON: its body as text.
pub async fn send(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    auth: Auth<'_>,
    idempotency_key: Option<&str>,
    body: Option<&Value>,
) -> Result<String, String> {
    let (style, token) = match auth {
        Auth::User(token) => ("user", token),
        Auth::System(token) => ("system", token),
    };
    let mut request = http
        .request(method.clone(), url)
        .bearer_auth(token)
        .header("X-Vercel-Auth", style);
    if let Some(key) = idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("{method} {url}: {e}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| format!("{method} {url}: reading the answer: {e}"))?;
    if !status.is_success() {
        return Err(format!("{method} {url} answered {status}: {text}"));
    }
    Ok(text)
}

/// A Vercel team with marketbridge installed, and one resource of it.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// The installation at the simulator.
    pub installation: InstallationHandle,
    /// The first resource provisioned for it.
    pub resource_id: String,
}

/// Tokens of one tenant, minted for a scenario (they live an hour).
#[derive(Debug, Clone)]
pub struct Tokens {
    /// A team admin's user token.
    pub user: String,
    /// Vercel's system token for the installation.
    pub system: String,
}

impl Tenant {
    /// Fresh tokens.
    pub fn tokens(&self, vercel: &VercelSimulator) -> Tokens {
        Tokens {
            user: vercel.admin_token(&self.installation),
            system: vercel.system_token(Some(&self.installation)),
        }
    }

    /// `{base}/v1/installations/{id}`.
    pub fn installation_url(&self, vercel_url: &str) -> String {
        format!("{vercel_url}/v1/installations/{}", self.installation.id)
    }

    /// `{base}/v1/installations/{id}/resources`.
    pub fn resources_url(&self, vercel_url: &str) -> String {
        format!("{}/resources", self.installation_url(vercel_url))
    }
}

/// The body of a provision (`POST …/resources`), as Vercel sends it.
pub fn provision_body(name: &str) -> Value {
    json!({
        "productId": "database",
        "name": name,
        "metadata": {"region": "fra1"},
        "billingPlanId": "pro",
    })
}

/// Provisions one resource; returns its id.
pub async fn provision(
    http: &reqwest::Client,
    resources_url: &str,
    user_token: &str,
    name: &str,
) -> Result<String, String> {
    let key = format!("bench-{name}");
    let body = call(
        http,
        Method::POST,
        resources_url,
        Auth::User(user_token),
        Some(&key),
        Some(&provision_body(name)),
    )
    .await?;
    body["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("POST {resources_url} answered without an id: {body}"))
}

/// Installs marketbridge for a new team at the simulator (`PUT
/// /v1/installations/{id}`) and provisions its first resource.
pub async fn install(
    http: &reqwest::Client,
    vercel: &VercelSimulator,
    vercel_url: &str,
    name: &str,
) -> Result<Tenant, String> {
    let installation = vercel.new_installation();
    let admin = vercel.admin_token(&installation);
    let mut tenant = Tenant {
        installation,
        resource_id: String::new(),
    };
    call(
        http,
        Method::PUT,
        &tenant.installation_url(vercel_url),
        Auth::User(&admin),
        Some(&format!("bench-install-{name}")),
        Some(&tenant.installation.upsert_body()),
    )
    .await?;
    tenant.resource_id = provision(http, &tenant.resources_url(vercel_url), &admin, name).await?;
    Ok(tenant)
}
