//! Installation credentials: short-lived tokens from the client-credentials
//! grant, their per-installation cache, credential revocation, and the one
//! way every caller makes a Vercel call with an installation token
//! ([`VercelApi::with_token`]).
//!
//! The grant's endpoint and field names are UNVERIFIED (contract §3.2), so
//! they come from configuration ([`TokenGrant`]). The answer is read
//! leniently: the token field must be a non-empty string; the lifetime may be
//! a number or a numeric string and defaults to an hour.
//!
//! Status rules for every call: a `401` is answered by one refresh and one
//! retry; a `410 Gone` is terminal (the installation is gone at Vercel).

use super::{VercelApi, path_segment, refusal};
use chrono::{DateTime, Utc};
use marketbridge_core::crypto::{SecretString, sha256_hex};
use marketbridge_core::{Error, ErrorCode, Result};
use marketbridge_proto::account::v1::{
    GetMarketplaceCredentialRequest, MarkMarketplaceGoneRequest,
};
use marketbridge_proto::common::v1::{AccountSelector, Marketplace, RequestContext};
use marketbridge_rpc::AccountApi;
use marketbridge_rpc::http::send_traced;
use reqwest::Method;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tracing::Instrument;

/// The kind of a token obtained with the client-credentials grant.
pub const SHORT_LIVED: &str = "short-lived";
/// The kind of the token stored at install (deprecated by Vercel).
pub const LONG_LIVED: &str = "long-lived";

/// What an error from a `410 Gone` says, so it is recognised after crossing
/// services.
const GONE_MARK: &str = "the installation is gone at Vercel (410)";

/// Lifetime assumed when the grant's answer gives none.
const DEFAULT_LIFETIME_SECONDS: i64 = 3600;

/// The error a `410 Gone` stands for: terminal (never retried).
pub(crate) fn gone_error(what: &str, detail: &str) -> Error {
    Error::new(
        ErrorCode::Unprocessable,
        format!("{what}: {GONE_MARK}: {detail}"),
    )
}

/// True when `error` comes from a `410 Gone` of Vercel (here or in another
/// service).
pub fn is_gone(error: &Error) -> bool {
    error.message().contains(GONE_MARK)
}

/// True when Vercel refused the token itself (`401`).
pub fn is_unauthorized(error: &Error) -> bool {
    error.code() == ErrorCode::PermissionDenied && error.message().contains(" answered 401")
}

/// A short identifier of a token (not the token): lets a caller say which
/// token Vercel refused without sending it back.
pub fn token_id(token: &SecretString) -> String {
    sha256_hex(token.expose().as_bytes())[..16].to_owned()
}

/// How to ask Vercel for a short-lived installation token (all UNVERIFIED,
/// from configuration).
#[derive(Clone)]
pub struct TokenGrant {
    /// A URL, or a path under the API's base URL.
    pub endpoint: String,
    /// `json` for a JSON body; anything else sends a form.
    pub encoding: String,
    /// The `grant_type` value.
    pub grant_type: String,
    /// Field carrying the client id.
    pub client_id_field: String,
    /// Field carrying the client secret.
    pub client_secret_field: String,
    /// Field naming the installation.
    pub installation_field: String,
    /// Answer field holding the token.
    pub token_field: String,
    /// Answer field holding the lifetime in seconds.
    pub expires_field: String,
    /// The integration's client id.
    pub client_id: String,
    /// The integration's client secret.
    pub client_secret: SecretString,
}

impl std::fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGrant")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// A token the grant issued.
#[derive(Clone)]
pub struct IssuedToken {
    /// The bearer token.
    pub secret: SecretString,
    /// Seconds it lives.
    pub expires_in: i64,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// Reads the grant's answer leniently.
pub fn read_issued(answer: &Value, grant: &TokenGrant) -> Result<IssuedToken> {
    let token = answer
        .get(&grant.token_field)
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Error::unavailable(format!(
                "the token answer has no `{}` string",
                grant.token_field
            ))
        })?;
    let expires_in = match answer.get(&grant.expires_field) {
        Some(Value::Number(n)) => n.as_f64().map(|s| s as i64),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
    .filter(|s| *s > 0)
    .unwrap_or(DEFAULT_LIFETIME_SECONDS);
    Ok(IssuedToken {
        secret: SecretString::new(token),
        expires_in,
    })
}

impl VercelApi {
    /// Requests a short-lived token for an installation with the
    /// client-credentials grant. A `410` is [`is_gone`].
    pub async fn request_installation_token(
        &self,
        grant: &TokenGrant,
        installation_id: &str,
    ) -> Result<IssuedToken> {
        let id = path_segment("installationId", installation_id)?;
        let url = if grant.endpoint.starts_with("http://") || grant.endpoint.starts_with("https://")
        {
            grant.endpoint.clone()
        } else {
            format!("{}{}", self.base_url, grant.endpoint)
        };
        let mut fields = Map::new();
        fields.insert("grant_type".into(), Value::String(grant.grant_type.clone()));
        fields.insert(
            grant.client_id_field.clone(),
            Value::String(grant.client_id.clone()),
        );
        fields.insert(
            grant.client_secret_field.clone(),
            Value::String(grant.client_secret.expose().to_owned()),
        );
        fields.insert(grant.installation_field.clone(), Value::String(id));
        let request = self.http.request(Method::POST, url);
        let request = if grant.encoding.eq_ignore_ascii_case("json") {
            request.json(&fields)
        } else {
            let pairs: Vec<(String, String)> = fields
                .into_iter()
                .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned()))
                .collect();
            request.form(&pairs)
        };
        let route = "token grant";
        let answer = send_traced(request, &self.peer, route).await?;
        if !(200..300).contains(&answer.status) {
            tracing::warn!(
                status = answer.status,
                installation.id = installation_id,
                "vercel refused an installation token"
            );
            return Err(refusal(&answer, &Method::POST, route));
        }
        let body: Value = answer.json()?;
        read_issued(&body, grant)
    }

    /// `POST /v1/installations/{id}/credentials/revoke`, authenticated with
    /// a live credential, naming the one to retire in `body` (field names
    /// UNVERIFIED; any 2xx is success).
    pub async fn revoke_credentials(
        &self,
        token: &SecretString,
        installation_id: &str,
        body: &Value,
    ) -> Result<()> {
        let id = path_segment("installationId", installation_id)?;
        self.call(
            token,
            Method::POST,
            "/v1/installations/{id}/credentials/revoke",
            &format!("/v1/installations/{id}/credentials/revoke"),
            Some(body),
        )
        .await
        .map(drop)
    }

    /// Runs `call` with the installation's token from `tokens`: on a `401`
    /// it asks for a fresh token once and retries once; on a `410` it
    /// reports the installation gone and returns the (terminal) error. The
    /// call runs in a span recording `vercel.token_kind`.
    pub async fn with_token<T, F, Fut>(
        &self,
        tokens: &AccountTokens,
        installation_id: &str,
        call: F,
    ) -> Result<T>
    where
        F: Fn(SecretString) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let token = tokens.token(installation_id, None).await?;
        let span = tracing::info_span!("vercel.call", installation.id = %installation_id, vercel.token_kind = %token.kind);
        let mut result = call(token.secret.clone()).instrument(span).await;
        if let Err(error) = &result
            && is_unauthorized(error)
        {
            tracing::info!(installation.id = %installation_id, vercel.token_kind = %token.kind, "vercel refused the token; retrying with a fresh one");
            let fresh = tokens.token(installation_id, Some(&token)).await?;
            let span = tracing::info_span!("vercel.call", installation.id = %installation_id, vercel.token_kind = %fresh.kind, retry = true);
            result = call(fresh.secret).instrument(span).await;
        }
        if let Err(error) = &result
            && is_gone(error)
        {
            tracing::warn!(installation.id = %installation_id, error = %error, "vercel answered 410: the installation is gone");
            if let Err(report) = tokens.gone(installation_id, error.message()).await {
                tracing::warn!(installation.id = %installation_id, error = %report, "cannot record the installation as gone");
            }
        }
        result
    }
}

/// A token to call Vercel with, as the account service hands it out.
#[derive(Clone)]
pub struct CallToken {
    /// The bearer token.
    pub secret: SecretString,
    /// [`SHORT_LIVED`] or [`LONG_LIVED`].
    pub kind: String,
    /// [`token_id`] of the token.
    pub id: String,
}

impl std::fmt::Debug for CallToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallToken")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Installation tokens from the account service, which holds the one token
/// cache of the set (`GetMarketplaceCredential` with `for_call`).
#[derive(Clone)]
pub struct AccountTokens {
    accounts: Arc<dyn AccountApi>,
}

impl std::fmt::Debug for AccountTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountTokens").finish_non_exhaustive()
    }
}

impl AccountTokens {
    /// Tokens through `accounts`.
    pub fn new(accounts: Arc<dyn AccountApi>) -> Self {
        Self { accounts }
    }

    /// The token to call with now; with `stale`, one that replaces the token
    /// Vercel just refused.
    pub async fn token(
        &self,
        installation_id: &str,
        stale: Option<&CallToken>,
    ) -> Result<CallToken> {
        let credential = self
            .accounts
            .get_marketplace_credential(GetMarketplaceCredentialRequest {
                account: Some(AccountSelector::by_ref(
                    Marketplace::Vercel,
                    installation_id,
                )),
                for_call: true,
                stale_token_id: stale.map(|t| t.id.clone()).unwrap_or_default(),
            })
            .await?;
        let secret = SecretString::new(credential.access_token);
        let kind = if credential.token_kind.is_empty() {
            LONG_LIVED.to_owned()
        } else {
            credential.token_kind
        };
        Ok(CallToken {
            id: token_id(&secret),
            secret,
            kind,
        })
    }

    /// Records that Vercel answered `410` for the installation.
    pub async fn gone(&self, installation_id: &str, reason: &str) -> Result<()> {
        self.accounts
            .mark_marketplace_gone(MarkMarketplaceGoneRequest {
                context: Some(RequestContext {
                    idempotency_key: format!("gone:{installation_id}"),
                    actor: None,
                }),
                account: Some(AccountSelector::by_ref(
                    Marketplace::Vercel,
                    installation_id,
                )),
                reason: reason.chars().take(500).collect(),
            })
            .await?;
        Ok(())
    }
}

/// A cached short-lived token.
#[derive(Clone)]
pub struct CachedToken {
    /// The bearer token.
    pub secret: SecretString,
    /// [`token_id`] of it.
    pub id: String,
    /// When Vercel stops accepting it.
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("id", &self.id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<CachedToken>>>;

/// One short-lived token per installation, replaced `margin` before it
/// expires or when a caller reports it refused. At most one request for a
/// token is in flight per installation: the others wait for its result.
#[derive(Debug)]
pub struct TokenCache {
    slots: Mutex<HashMap<String, Slot>>,
    margin: chrono::Duration,
}

impl TokenCache {
    /// A cache replacing tokens `margin_seconds` before expiry.
    pub fn new(margin_seconds: u64) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            margin: chrono::Duration::seconds(margin_seconds.min(86_400) as i64),
        }
    }

    fn slot(&self, key: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(key.to_owned()).or_default().clone()
    }

    /// The token of `key`: the cached one while it is fresh at `now` and is
    /// not `stale_id`, otherwise one from `fetch` (awaited by every
    /// concurrent caller of the same key). A failed fetch leaves the slot
    /// empty and returns the error.
    pub async fn get<F, Fut>(
        &self,
        key: &str,
        now: impl Fn() -> DateTime<Utc>,
        stale_id: Option<&str>,
        fetch: F,
    ) -> Result<CachedToken>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<IssuedToken>>,
    {
        let slot = self.slot(key);
        let mut held = slot.lock().await;
        if let Some(token) = held.as_ref() {
            let fresh = now() + self.margin < token.expires_at;
            let refused = stale_id.is_some_and(|id| id == token.id);
            if fresh && !refused {
                return Ok(token.clone());
            }
        }
        *held = None;
        let issued = fetch().await?;
        let token = CachedToken {
            id: token_id(&issued.secret),
            secret: issued.secret,
            expires_at: now() + chrono::Duration::seconds(issued.expires_in),
        };
        *held = Some(token.clone());
        Ok(token)
    }

    /// Drops the token of `key` (the installation is gone or its credential
    /// changed).
    pub fn forget(&self, key: &str) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn issued(n: usize, expires_in: i64) -> IssuedToken {
        IssuedToken {
            secret: SecretString::new(format!("token-{n}")),
            expires_in,
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[tokio::test]
    async fn caches_until_the_margin_before_expiry() {
        let cache = TokenCache::new(300);
        let grants = AtomicUsize::new(0);
        let fetch = || async {
            let n = grants.fetch_add(1, Ordering::SeqCst);
            Ok(issued(n, 3600))
        };
        let first = cache.get("icfg_a", || at(0), None, fetch).await.unwrap();
        for _ in 0..5 {
            let again = cache
                .get("icfg_a", || at(3000), None, || async { unreachable!() })
                .await
                .unwrap();
            assert_eq!(again.id, first.id);
        }
        assert_eq!(grants.load(Ordering::SeqCst), 1);
        let renewed = cache
            .get(
                "icfg_a",
                || at(3301),
                None,
                || async { Ok(issued(9, 3600)) },
            )
            .await
            .unwrap();
        assert_ne!(renewed.id, first.id, "replaced within the margin");
        assert_eq!(renewed.expires_at, at(3301 + 3600));
    }

    #[tokio::test]
    async fn a_refused_token_is_replaced_once() {
        let cache = TokenCache::new(300);
        let first = cache
            .get("icfg_a", || at(0), None, || async { Ok(issued(1, 3600)) })
            .await
            .unwrap();
        let second = cache
            .get(
                "icfg_a",
                || at(1),
                Some(&first.id),
                || async { Ok(issued(2, 3600)) },
            )
            .await
            .unwrap();
        assert_ne!(second.id, first.id);
        // A late report about the first token does not replace the second.
        let third = cache
            .get(
                "icfg_a",
                || at(2),
                Some(&first.id),
                || async { unreachable!() },
            )
            .await
            .unwrap();
        assert_eq!(third.id, second.id);
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_request() {
        let cache = Arc::new(TokenCache::new(300));
        let grants = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let cache = cache.clone();
            let grants = grants.clone();
            tasks.push(tokio::spawn(async move {
                cache
                    .get(
                        "icfg_a",
                        || at(0),
                        None,
                        || async move {
                            let n = grants.fetch_add(1, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            Ok(issued(n, 3600))
                        },
                    )
                    .await
                    .unwrap()
                    .id
            }));
        }
        let mut ids = Vec::new();
        for task in tasks {
            ids.push(task.await.unwrap());
        }
        assert_eq!(grants.load(Ordering::SeqCst), 1);
        assert!(ids.iter().all(|id| id == &ids[0]));
    }

    #[tokio::test]
    async fn a_failed_request_caches_nothing_and_installations_are_apart() {
        let cache = TokenCache::new(300);
        let failed = cache
            .get(
                "icfg_a",
                || at(0),
                None,
                || async { Err(Error::unavailable("down")) },
            )
            .await;
        assert!(failed.is_err());
        let a = cache
            .get("icfg_a", || at(0), None, || async { Ok(issued(1, 3600)) })
            .await
            .unwrap();
        let b = cache
            .get("icfg_b", || at(0), None, || async { Ok(issued(2, 3600)) })
            .await
            .unwrap();
        assert_ne!(a.id, b.id);
        cache.forget("icfg_a");
        let again = cache
            .get("icfg_a", || at(1), None, || async { Ok(issued(3, 3600)) })
            .await
            .unwrap();
        assert_ne!(again.id, a.id);
    }

    #[test]
    fn reads_answers_leniently() {
        let grant = TokenGrant {
            endpoint: "/t".into(),
            encoding: "form".into(),
            grant_type: "client_credentials".into(),
            client_id_field: "client_id".into(),
            client_secret_field: "client_secret".into(),
            installation_field: "installation_id".into(),
            token_field: "access_token".into(),
            expires_field: "expires_in".into(),
            client_id: "oac_x".into(),
            client_secret: SecretString::new("s"),
        };
        let read = read_issued(
            &serde_json::json!({"access_token": "tok-secret", "expires_in": "120"}),
            &grant,
        )
        .unwrap();
        assert_eq!(read.expires_in, 120);
        assert!(!format!("{read:?}").contains("tok-secret"));
        let read = read_issued(&serde_json::json!({"access_token": "t"}), &grant).unwrap();
        assert_eq!(read.expires_in, 3600);
        assert!(read_issued(&serde_json::json!({"access_token": ""}), &grant).is_err());
        assert!(format!("{grant:?}").contains("oac_x"));
    }
}
