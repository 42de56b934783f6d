//! OAuth access tokens from a service-account key file: a JWT assertion
//! signed with the key is exchanged at the token endpoint (the JWT bearer
//! grant), and the token is reused until shortly before it expires.

use crate::api::AccessTokens;
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use marketbridge_core::crypto::SecretString;
use marketbridge_core::time::SharedClock;
use marketbridge_core::{Error, ErrorCode, Result};
use marketbridge_rpc::http::send_traced;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The scope of the Procurement API, Pub/Sub and Service Control.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The grant type of the exchange.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Lifetime asked for each assertion.
const ASSERTION_LIFETIME_SECONDS: i64 = 3600;
/// A token is renewed this long before it expires.
const RENEW_BEFORE_SECONDS: i64 = 120;

/// A service-account key file as Google issues it.
#[derive(Clone, Deserialize)]
pub struct ServiceAccountKey {
    /// `service_account`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The project.
    #[serde(default)]
    pub project_id: String,
    /// Id of the key (sent as `kid`).
    #[serde(default)]
    pub private_key_id: String,
    /// The private key, PEM.
    #[serde(default)]
    private_key: String,
    /// The service account's e-mail address.
    #[serde(default)]
    pub client_email: String,
    /// The token endpoint.
    #[serde(default)]
    pub token_uri: String,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountKey {
    /// Parses a key file's text.
    pub fn from_json(text: &str) -> Result<Self> {
        let key: ServiceAccountKey = serde_json::from_str(text).map_err(|e| {
            Error::validation(format!("the service-account key is not valid JSON: {e}"))
        })?;
        if key.client_email.trim().is_empty() {
            return Err(Error::validation(
                "the service-account key has no client_email",
            ));
        }
        if !key.private_key.contains("PRIVATE KEY") {
            return Err(Error::validation(
                "the service-account key has no PEM private_key",
            ));
        }
        EncodingKey::from_rsa_pem(key.private_key.as_bytes()).map_err(|e| {
            Error::validation(format!(
                "the service-account private key cannot be read: {e}"
            ))
        })?;
        Ok(key)
    }

    /// Reads a key file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::validation(format!(
                "cannot read the service-account key {}: {e}",
                path.display()
            ))
        })?;
        Self::from_json(&text)
    }

    /// The key file's text for a key (simulators write these).
    pub fn to_json(
        client_email: &str,
        private_key_id: &str,
        private_key_pem: &str,
        token_uri: &str,
        project_id: &str,
    ) -> String {
        serde_json::json!({
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": private_key_id,
            "private_key": private_key_pem,
            "client_email": client_email,
            "client_id": "",
            "token_uri": token_uri,
        })
        .to_string()
    }
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
}

struct CachedToken {
    token: SecretString,
    expires_at: DateTime<Utc>,
}

/// Access tokens of one service account.
pub struct ServiceAccountTokens {
    http: reqwest::Client,
    key: ServiceAccountKey,
    encoding: EncodingKey,
    token_url: String,
    scope: String,
    clock: SharedClock,
    cached: tokio::sync::Mutex<Option<CachedToken>>,
}

impl std::fmt::Debug for ServiceAccountTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountTokens")
            .field("client_email", &self.key.client_email)
            .field("token_url", &self.token_url)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountTokens {
    /// Tokens for `key`, from `token_url` (empty: the key's `token_uri`).
    pub fn new(
        http: reqwest::Client,
        key: ServiceAccountKey,
        token_url: &str,
        clock: SharedClock,
    ) -> Result<Self> {
        let token_url = if token_url.trim().is_empty() {
            key.token_uri.trim().to_owned()
        } else {
            token_url.trim().to_owned()
        };
        if token_url.is_empty() {
            return Err(Error::validation(
                "no OAuth token endpoint: set google.oauth_token_url or token_uri in the key file",
            ));
        }
        let encoding = EncodingKey::from_rsa_pem(key.private_key.as_bytes()).map_err(|e| {
            Error::validation(format!(
                "the service-account private key cannot be read: {e}"
            ))
        })?;
        Ok(Self {
            http,
            key,
            encoding,
            token_url,
            scope: CLOUD_PLATFORM_SCOPE.to_owned(),
            clock,
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// The service account's e-mail address.
    pub fn client_email(&self) -> &str {
        &self.key.client_email
    }

    fn assertion(&self, now: DateTime<Utc>) -> Result<String> {
        let mut header = Header::new(Algorithm::RS256);
        if !self.key.private_key_id.is_empty() {
            header.kid = Some(self.key.private_key_id.clone());
        }
        let claims = AssertionClaims {
            iss: &self.key.client_email,
            scope: &self.scope,
            aud: &self.token_url,
            iat: now.timestamp(),
            exp: now.timestamp() + ASSERTION_LIFETIME_SECONDS,
        };
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| Error::internal(format!("cannot sign the token assertion: {e}")))
    }

    async fn exchange(&self, now: DateTime<Utc>) -> Result<CachedToken> {
        let assertion = self.assertion(now)?;
        let peer = self
            .token_url
            .split("://")
            .nth(1)
            .unwrap_or(&self.token_url)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let request = self
            .http
            .post(&self.token_url)
            .form(&[("grant_type", JWT_BEARER_GRANT), ("assertion", &assertion)]);
        let answer = send_traced(request, &peer, "oauth2.token").await?;
        if !(200..300).contains(&answer.status) {
            let code = match answer.status {
                429 => ErrorCode::RateLimited,
                408 | 500..=599 => ErrorCode::Unavailable,
                _ => ErrorCode::PermissionDenied,
            };
            return Err(Error::new(
                code,
                format!(
                    "the OAuth token endpoint refused the service account {} ({}): {}",
                    self.key.client_email,
                    answer.status,
                    answer.text()
                ),
            ));
        }
        let token: TokenAnswer = answer.json()?;
        if token.access_token.is_empty() {
            return Err(Error::unavailable(
                "the OAuth token endpoint returned no access_token",
            ));
        }
        let lifetime = token.expires_in.unwrap_or(3600).max(0);
        Ok(CachedToken {
            token: SecretString::new(token.access_token),
            expires_at: now + Duration::seconds(lifetime),
        })
    }
}

#[async_trait]
impl AccessTokens for ServiceAccountTokens {
    async fn access_token(&self) -> Result<SecretString> {
        let mut cached = self.cached.lock().await;
        let now = self.clock.now();
        if let Some(current) = cached.as_ref()
            && now + Duration::seconds(RENEW_BEFORE_SECONDS) < current.expires_at
        {
            return Ok(current.token.clone());
        }
        let fresh = self.exchange(now).await?;
        tracing::debug!(service_account = %self.key.client_email, "access token obtained");
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }
}
