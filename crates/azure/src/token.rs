//! Access tokens for the Marketplace APIs: Entra client credentials (§2),
//! cached per client until five minutes before they expire, and the
//! unsigned stand-in Microsoft's emulator reads offline (§8.4).

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use marketbridge_core::crypto::SecretString;
use marketbridge_core::time::SharedClock;
use marketbridge_core::{Error, ErrorCode, Result};
use marketbridge_rpc::http::{error_for_status, send_traced};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// Refresh a cached token this long before it expires.
pub const REFRESH_BEFORE: ChronoDuration = ChronoDuration::minutes(5);

/// Hands out access tokens for the Marketplace APIs.
#[async_trait]
pub trait AccessTokens: Send + Sync + 'static {
    /// A valid access token.
    async fn access_token(&self) -> Result<SecretString>;
    /// Forgets the cached token (Microsoft refused it).
    async fn invalidate(&self) {}
}

/// Entra's answer (v1 numbers are strings, v2 numbers are numbers).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default, deserialize_with = "number_or_string")]
    expires_in: Option<i64>,
    #[serde(default, deserialize_with = "number_or_string")]
    expires_on: Option<i64>,
}

fn number_or_string<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<i64>, D::Error> {
    Ok(match Option::<Value>::deserialize(deserializer)? {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

/// Client-credentials tokens of one Entra app, cached.
pub struct EntraTokens {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    secret: SecretString,
    resource: String,
    clock: SharedClock,
    cached: Mutex<Option<(SecretString, DateTime<Utc>)>>,
}

impl std::fmt::Debug for EntraTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraTokens")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl EntraTokens {
    /// Tokens of app `client_id` for `resource` from `token_url`: the v1
    /// endpoint takes `resource`, the v2 one (`/v2.0/token`) a `scope`.
    pub fn new(
        http: reqwest::Client,
        token_url: &str,
        client_id: &str,
        secret: SecretString,
        resource: &str,
        clock: SharedClock,
    ) -> Self {
        Self {
            http,
            token_url: token_url.to_owned(),
            client_id: client_id.to_owned(),
            secret,
            resource: resource.to_owned(),
            clock,
            cached: Mutex::new(None),
        }
    }

    async fn fetch(&self) -> Result<(SecretString, DateTime<Utc>)> {
        let resource_field = if self.token_url.contains("/v2.0/") {
            ("scope", format!("{}/.default", self.resource))
        } else {
            ("resource", self.resource.clone())
        };
        let form = [
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", self.client_id.clone()),
            ("client_secret", self.secret.expose().to_owned()),
            (resource_field.0, resource_field.1),
        ];
        let peer = peer_of(&self.token_url);
        let answer = send_traced(
            self.http.post(&self.token_url).form(&form),
            &peer,
            "/{tenant}/oauth2/token",
        )
        .await?;
        if !(200..300).contains(&answer.status) {
            let error = error_for_status(&answer, "Entra token endpoint");
            // A refused secret is a configuration problem, not the caller's.
            return Err(match error.code() {
                ErrorCode::Validation | ErrorCode::PermissionDenied => Error::unavailable(format!(
                    "Entra refused the client credentials of azure.client_id: {}",
                    error.message()
                )),
                _ => error,
            });
        }
        let token: TokenAnswer = answer.json()?;
        let now = self.clock.now();
        let expires_at = token
            .expires_on
            .and_then(|at| DateTime::<Utc>::from_timestamp(at, 0))
            .or_else(|| token.expires_in.map(|s| now + ChronoDuration::seconds(s)))
            .unwrap_or(now + ChronoDuration::minutes(10));
        Ok((SecretString::new(token.access_token), expires_at))
    }
}

#[async_trait]
impl AccessTokens for EntraTokens {
    async fn access_token(&self) -> Result<SecretString> {
        let mut cached = self.cached.lock().await;
        if let Some((token, expires_at)) = cached.as_ref()
            && self.clock.now() + REFRESH_BEFORE < *expires_at
        {
            return Ok(token.clone());
        }
        let fresh = self.fetch().await?;
        *cached = Some(fresh.clone());
        Ok(fresh.0)
    }

    async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }
}

/// The unsigned token Microsoft's emulator reads (it decodes `tid` and
/// `appid` without verifying anything). Never for Microsoft's service.
#[derive(Debug, Clone)]
pub struct EmulatorTokens {
    tenant_id: String,
    client_id: String,
    resource: String,
    clock: SharedClock,
}

impl EmulatorTokens {
    /// Tokens naming `tenant_id` and app `client_id`.
    pub fn new(tenant_id: &str, client_id: &str, resource: &str, clock: SharedClock) -> Self {
        Self {
            tenant_id: tenant_id.to_owned(),
            client_id: client_id.to_owned(),
            resource: resource.to_owned(),
            clock,
        }
    }
}

#[async_trait]
impl AccessTokens for EmulatorTokens {
    async fn access_token(&self) -> Result<SecretString> {
        let now = self.clock.now().timestamp();
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string());
        let claims = URL_SAFE_NO_PAD.encode(
            json!({
                "aud": self.resource,
                "iss": format!("https://sts.windows.net/{}/", self.tenant_id),
                "tid": self.tenant_id,
                "appid": self.client_id,
                "iat": now,
                "nbf": now,
                "exp": now + 3600,
            })
            .to_string(),
        );
        Ok(SecretString::new(format!("{header}.{claims}.")))
    }
}

/// `host:port` of a URL, for spans and metrics.
pub fn peer_of(url: &str) -> String {
    url.split("://")
        .nth(1)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_reads_strings_and_numbers() {
        let v1: TokenAnswer = serde_json::from_str(
            r#"{"token_type":"Bearer","expires_in":"3599","expires_on":"1700000000","access_token":"a"}"#,
        )
        .unwrap();
        assert_eq!(v1.expires_in, Some(3599));
        assert_eq!(v1.expires_on, Some(1_700_000_000));
        let v2: TokenAnswer =
            serde_json::from_str(r#"{"expires_in":3599,"access_token":"a"}"#).unwrap();
        assert_eq!(v2.expires_in, Some(3599));
        assert_eq!(v2.expires_on, None);
    }
}
