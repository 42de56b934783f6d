//! Public keys published as a JWKS document, cached by `kid`. An unknown
//! `kid` refetches the document (Google rotates keys), but not more often
//! than the refresh interval, so forged tokens with random key ids cannot
//! make us hammer the key endpoint.

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;
use marketbridge_core::{Error, Result};
use marketbridge_rpc::http::send_traced;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Least time between two fetches caused by unknown key ids.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// The keys at one JWKS URL.
pub struct KeySet {
    http: reqwest::Client,
    url: String,
    keys: RwLock<HashMap<String, Arc<DecodingKey>>>,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    refresh_interval: Duration,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Why a key could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLookupError {
    /// The document does not list the key id.
    UnknownKey(String),
    /// The document could not be fetched or read.
    Unavailable(String),
}

impl KeySet {
    /// Keys published at `url`.
    pub fn new(http: reqwest::Client, url: &str) -> Self {
        Self {
            http,
            url: url.trim().to_owned(),
            keys: RwLock::new(HashMap::new()),
            last_fetch: tokio::sync::Mutex::new(None),
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
        }
    }

    /// Changes the least time between fetches caused by unknown key ids.
    pub fn with_refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn cached(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(kid)
            .cloned()
    }

    /// The key named `kid`, fetching the document when it is not cached.
    pub async fn key(&self, kid: &str) -> std::result::Result<Arc<DecodingKey>, KeyLookupError> {
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        let mut last_fetch = self.last_fetch.lock().await;
        // Another caller may have fetched while this one waited.
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        let recently = last_fetch.is_some_and(|at| at.elapsed() < self.refresh_interval);
        if recently {
            return Err(KeyLookupError::UnknownKey(kid.to_owned()));
        }
        let fetched = self.fetch().await;
        *last_fetch = Some(Instant::now());
        let keys = fetched.map_err(|e| KeyLookupError::Unavailable(e.message().to_owned()))?;
        tracing::debug!(url = %self.url, keys = keys.len(), "signing keys fetched");
        let found = keys.get(kid).cloned();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        found.ok_or_else(|| KeyLookupError::UnknownKey(kid.to_owned()))
    }

    async fn fetch(&self) -> Result<HashMap<String, Arc<DecodingKey>>> {
        if self.url.is_empty() {
            return Err(Error::unavailable("no key URL is configured"));
        }
        let peer = self
            .url
            .split("://")
            .nth(1)
            .unwrap_or(&self.url)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let answer = send_traced(self.http.get(&self.url), &peer, "jwks").await?;
        if !(200..300).contains(&answer.status) {
            return Err(Error::unavailable(format!(
                "the key endpoint {} answered {}",
                self.url, answer.status
            )));
        }
        let set: JwkSet = serde_json::from_slice(&answer.body).map_err(|e| {
            Error::unavailable(format!("the key endpoint {} sent no JWKS: {e}", self.url))
        })?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    keys.insert(kid, Arc::new(key));
                }
                Err(error) => {
                    tracing::warn!(kid = %kid, error = %error, "skipping an unreadable signing key")
                }
            }
        }
        Ok(keys)
    }
}
