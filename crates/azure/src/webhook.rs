//! The connection webhook's authentication (§4): the `Authorization:
//! Bearer` Entra token Microsoft signs its calls with. Checked: RS256 with a
//! key of the publisher tenant's OpenID configuration (`jwks_uri`, through
//! the shared key cache of `marketbridge_rpc::jwks`: background refresh,
//! bounded use of stale keys while Entra fails, backed-off fetches), `aud`
//! = our app, `tid` = our tenant, `appid`/`azp` = the Marketplace service
//! (configurable, §8.6), `iss` in its v1 or v2 form when present, and
//! `exp`/`nbf` within the configured skew (at most 60 s).

use jsonwebtoken::{Algorithm, Validation};
use marketbridge_core::time::SharedClock;
use marketbridge_core::{Error, ErrorCode};
use marketbridge_rpc::jwks::{KeyLookupError, KeySet, KeySetOptions};
use serde::Deserialize;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// The `key_set` name of the webhook token keys.
pub const WEBHOOK_KEY_SET: &str = "azure-webhook";
/// The longest clock difference accepted.
pub const MAX_SKEW_SECONDS: u64 = 60;
/// Least time between two failed OpenID configuration fetches.
const DISCOVERY_RETRY: Duration = Duration::from_secs(10);

/// Why a webhook token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Snake-case reason for logs and metrics.
    pub reason: &'static str,
    /// What exactly.
    pub message: String,
}

impl Rejected {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<Rejected> for Error {
    fn from(rejected: Rejected) -> Self {
        let code = if rejected.reason == "keys_unavailable" {
            ErrorCode::Unavailable
        } else {
            ErrorCode::Unauthenticated
        };
        Error::new(code, rejected.message)
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<Value>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    tid: Option<String>,
    #[serde(
        default,
        rename = "http://schemas.microsoft.com/identity/claims/tenantid"
    )]
    tenant_claim: Option<String>,
    #[serde(default)]
    appid: Option<String>,
    #[serde(default)]
    azp: Option<String>,
}

/// Who called, once verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The calling application (`appid`/`azp`).
    pub app_id: String,
}

/// The keys of the publisher tenant, found through its OpenID
/// configuration on first use.
struct Discovery {
    http: reqwest::Client,
    configuration_url: String,
    options: KeySetOptions,
    state: Mutex<(Option<KeySet>, Option<Instant>)>,
}

impl Discovery {
    async fn keys(&self) -> Result<KeySet, Rejected> {
        let mut state = self.state.lock().await;
        if let Some(keys) = &state.0 {
            return Ok(keys.clone());
        }
        if let Some(failed_at) = state.1
            && failed_at.elapsed() < DISCOVERY_RETRY
        {
            return Err(Rejected::new(
                "keys_unavailable",
                "the OpenID configuration of the publisher tenant cannot be fetched",
            ));
        }
        match self.discover().await {
            Ok(jwks_uri) => {
                let keys = KeySet::new(self.http.clone(), &jwks_uri)
                    .named(WEBHOOK_KEY_SET)
                    .with_options(self.options);
                state.0 = Some(keys.clone());
                Ok(keys)
            }
            Err(error) => {
                state.1 = Some(Instant::now());
                tracing::warn!(error = %error, url = %self.configuration_url, "the OpenID configuration for Azure webhook tokens cannot be fetched");
                Err(Rejected::new(
                    "keys_unavailable",
                    format!(
                        "the OpenID configuration of the publisher tenant cannot be fetched: {error}"
                    ),
                ))
            }
        }
    }

    async fn discover(&self) -> marketbridge_core::Result<String> {
        #[derive(Deserialize)]
        struct Configuration {
            jwks_uri: String,
        }
        let peer = crate::token::peer_of(&self.configuration_url);
        let answer = marketbridge_rpc::http::send_traced(
            self.http.get(&self.configuration_url),
            &peer,
            "/{tenant}/.well-known/openid-configuration",
        )
        .await?;
        if !(200..300).contains(&answer.status) {
            return Err(marketbridge_rpc::http::error_for_status(
                &answer,
                "OpenID configuration",
            ));
        }
        let configuration: Configuration = answer.json()?;
        if !configuration.jwks_uri.starts_with("https://")
            && !configuration.jwks_uri.starts_with("http://")
        {
            return Err(Error::unavailable(
                "the OpenID configuration names no jwks_uri",
            ));
        }
        Ok(configuration.jwks_uri)
    }
}

/// Verifies webhook tokens.
pub struct WebhookVerifier {
    discovery: Discovery,
    audience: String,
    tenant_id: String,
    app_id: String,
    skew: i64,
    accept_unsigned: bool,
    clock: SharedClock,
}

impl std::fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookVerifier")
            .field("configuration_url", &self.discovery.configuration_url)
            .field("audience", &self.audience)
            .field("tenant_id", &self.tenant_id)
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

impl WebhookVerifier {
    /// A verifier of tokens for our app `audience` in `tenant_id`, from the
    /// Marketplace app `app_id` (empty: any app), keys found through
    /// `openid_configuration_url`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        http: reqwest::Client,
        openid_configuration_url: &str,
        options: KeySetOptions,
        audience: &str,
        tenant_id: &str,
        app_id: &str,
        skew_seconds: u64,
        clock: SharedClock,
    ) -> Self {
        Self {
            discovery: Discovery {
                http,
                configuration_url: openid_configuration_url.to_owned(),
                options,
                state: Mutex::new((None, None)),
            },
            audience: audience.trim().to_owned(),
            tenant_id: tenant_id.trim().to_owned(),
            app_id: app_id.trim().to_owned(),
            skew: skew_seconds.min(MAX_SKEW_SECONDS) as i64,
            accept_unsigned: false,
            clock,
        }
    }

    /// Accepts calls without a token (Microsoft's emulator offline).
    pub fn accepting_unsigned(mut self, accept: bool) -> Self {
        self.accept_unsigned = accept;
        self
    }

    /// Verifies the value of an `Authorization` header.
    pub async fn verify_header(&self, authorization: Option<&str>) -> Result<Caller, Rejected> {
        let token = authorization.map(str::trim).and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        });
        match token {
            Some(token) if !token.is_empty() => self.verify(token).await,
            _ if self.accept_unsigned && authorization.is_none_or(|a| a.trim().is_empty()) => {
                Ok(Caller {
                    app_id: String::new(),
                })
            }
            _ => Err(Rejected::new(
                "missing",
                "the webhook call carries no Authorization: Bearer token",
            )),
        }
    }

    /// Verifies a token.
    pub async fn verify(&self, token: &str) -> Result<Caller, Rejected> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Rejected::new("malformed", "the webhook token is not a JWT"))?;
        if header.alg != Algorithm::RS256 {
            return Err(Rejected::new(
                "algorithm",
                format!(
                    "the webhook token is signed with {:?}; only RS256 is accepted",
                    header.alg
                ),
            ));
        }
        let kid = header
            .kid
            .filter(|k| !k.is_empty())
            .ok_or_else(|| Rejected::new("unknown_key", "the webhook token names no key (kid)"))?;
        let keys = self.discovery.keys().await?;
        let key = keys.key(&kid).await.map_err(|error| match error {
            KeyLookupError::UnknownKey(kid) => Rejected::new(
                "unknown_key",
                format!("the webhook token is signed with key `{kid}`, which the tenant does not publish"),
            ),
            KeyLookupError::Unavailable(detail) => Rejected::new(
                "keys_unavailable",
                format!("the webhook token keys cannot be fetched: {detail}"),
            ),
        })?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    Rejected::new("signature", "the webhook token's signature does not verify")
                }
                _ => Rejected::new(
                    "malformed",
                    format!("the webhook token cannot be read: {error}"),
                ),
            })?
            .claims;
        let now = self.clock.now().timestamp();
        let exp = claims
            .exp
            .ok_or_else(|| Rejected::new("malformed", "the webhook token has no expiry"))?;
        if now > exp + self.skew {
            return Err(Rejected::new("expired", "the webhook token has expired"));
        }
        if claims.nbf.is_some_and(|nbf| nbf > now + self.skew) {
            return Err(Rejected::new(
                "not_yet_valid",
                "the webhook token is not valid yet",
            ));
        }
        let audience_ok = match &claims.aud {
            Some(Value::String(aud)) => aud == &self.audience,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(&self.audience)),
            _ => false,
        };
        if self.audience.is_empty() || !audience_ok {
            return Err(Rejected::new(
                "audience",
                "the webhook token is not for this app",
            ));
        }
        let tenant = claims.tid.or(claims.tenant_claim).unwrap_or_default();
        if self.tenant_id.is_empty() || tenant != self.tenant_id {
            return Err(Rejected::new(
                "tenant",
                "the webhook token is from another tenant",
            ));
        }
        if let Some(issuer) = claims.iss.as_deref() {
            let v1 = format!("https://sts.windows.net/{}/", self.tenant_id);
            let v2 = format!("https://login.microsoftonline.com/{}/v2.0", self.tenant_id);
            if issuer != v1 && issuer != v2 {
                return Err(Rejected::new(
                    "issuer",
                    "the webhook token's issuer is not the tenant's",
                ));
            }
        }
        let app_id = claims.appid.or(claims.azp).unwrap_or_default();
        if !self.app_id.is_empty() && app_id != self.app_id {
            return Err(Rejected::new(
                "app",
                "the webhook token was not issued to the Marketplace service",
            ));
        }
        Ok(Caller { app_id })
    }
}
