//! Signing keys published as a JWKS document (Vercel's OIDC keys, Google's
//! push and signup keys), cached by `kid` and kept usable while the key
//! endpoint misbehaves:
//!
//! - Keys are fresh for the cache lifetime. After the first fetch, a
//!   background task refetches the document at three quarters of it, so
//!   callers never wait for a routine refresh.
//! - When a fetch fails, the keys already known stay in use for up to
//!   `max_stale` past their lifetime (a warning is logged and every use is
//!   counted in `jwks_stale_total{key_set}`); failures are counted in
//!   `jwks_fetch_failures_total{key_set}` and retried with exponential
//!   backoff (`retry_initial` doubling up to `retry_max`), never on every
//!   request.
//! - A `kid` the document does not list refetches it at most once per
//!   `unknown_key_interval`; until then every unknown key id is answered
//!   from the cache (negative caching), so a flood of forged key ids cannot
//!   hammer the endpoint. While fetches are backing off, an unknown key id
//!   is `Unavailable` without a fetch.

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;
use marketbridge_core::{Error, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::http::send_traced;

/// How a key set refreshes and how long it trusts what it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySetOptions {
    /// How long fetched keys are fresh.
    pub cache_lifetime: Duration,
    /// How long past `cache_lifetime` keys are still used while fetches
    /// fail.
    pub max_stale: Duration,
    /// Least time between two fetches caused by unknown key ids.
    pub unknown_key_interval: Duration,
    /// First retry delay after a failed fetch; doubled on every failure.
    pub retry_initial: Duration,
    /// Largest retry delay.
    pub retry_max: Duration,
}

impl Default for KeySetOptions {
    fn default() -> Self {
        Self {
            cache_lifetime: Duration::from_secs(600),
            max_stale: Duration::from_secs(86_400),
            unknown_key_interval: Duration::from_secs(10),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
        }
    }
}

impl KeySetOptions {
    /// Options with the gateway's configured lifetime and staleness bound
    /// (`gateway.jwks_cache_seconds`, `gateway.jwks_max_stale_seconds`).
    pub fn from_config(gateway: &marketbridge_config::GatewayOptions) -> Self {
        let cache_lifetime = Duration::from_secs(gateway.jwks_cache_seconds.max(1));
        Self {
            cache_lifetime,
            max_stale: Duration::from_secs(gateway.jwks_max_stale_seconds),
            retry_max: Duration::from_secs(300).min(cache_lifetime),
            ..Self::default()
        }
    }
}

/// Why a key could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLookupError {
    /// The document does not list the key id.
    UnknownKey(String),
    /// The document could not be fetched or read, and no usable copy is
    /// cached.
    Unavailable(String),
}

/// The keys at one JWKS URL. Clones share the cache.
#[derive(Clone)]
pub struct KeySet {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    url: String,
    name: String,
    options: KeySetOptions,
    state: Mutex<State>,
    fetching: tokio::sync::Mutex<()>,
    refresher_started: AtomicBool,
}

#[derive(Default)]
struct State {
    keys: HashMap<String, Arc<DecodingKey>>,
    /// When the last fetch succeeded.
    fetched_at: Option<Instant>,
    /// Failed fetches in a row.
    failures: u32,
    /// While failing: no fetch before this.
    retry_at: Option<Instant>,
    last_error: String,
    /// A warning was logged since keys went stale.
    stale_warned: bool,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("name", &self.inner.name)
            .field("url", &self.inner.url)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl KeySet {
    /// Keys published at `url`, with default options.
    pub fn new(http: reqwest::Client, url: &str) -> Self {
        Self::build(http, url, "jwks", KeySetOptions::default())
    }

    fn build(http: reqwest::Client, url: &str, name: &str, options: KeySetOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                http,
                url: url.trim().to_owned(),
                name: name.to_owned(),
                options,
                state: Mutex::new(State::default()),
                fetching: tokio::sync::Mutex::new(()),
                refresher_started: AtomicBool::new(false),
            }),
        }
    }

    /// The same key set under `name` (the `key_set` label of its metrics
    /// and logs: `vercel`, `google-push`, `google-signup`).
    pub fn named(self, name: &str) -> Self {
        let inner = &self.inner;
        Self::build(inner.http.clone(), &inner.url, name, inner.options)
    }

    /// The same key set with `options`.
    pub fn with_options(self, options: KeySetOptions) -> Self {
        let inner = &self.inner;
        Self::build(inner.http.clone(), &inner.url, &inner.name, options)
    }

    /// Changes the least time between fetches caused by unknown key ids.
    pub fn with_refresh_interval(self, interval: Duration) -> Self {
        let options = KeySetOptions {
            unknown_key_interval: interval,
            ..self.inner.options
        };
        self.with_options(options)
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The key named `kid`: from the cache when fresh; fetched when unknown
    /// (at most once per `unknown_key_interval`) or too old; a stale copy
    /// when the endpoint fails.
    pub async fn key(&self, kid: &str) -> std::result::Result<Arc<DecodingKey>, KeyLookupError> {
        match self.inner.cached(kid, Instant::now()) {
            Cached::Fresh(key) | Cached::Stale(key) => return Ok(key),
            Cached::Unknown => return Err(KeyLookupError::UnknownKey(kid.to_owned())),
            Cached::Unavailable(detail) => return Err(KeyLookupError::Unavailable(detail)),
            Cached::Fetch => {}
        }
        let _fetching = self.inner.fetching.lock().await;
        // Another caller may have fetched (or failed) while this one waited.
        match self.inner.cached(kid, Instant::now()) {
            Cached::Fresh(key) | Cached::Stale(key) => return Ok(key),
            Cached::Unknown => return Err(KeyLookupError::UnknownKey(kid.to_owned())),
            Cached::Unavailable(detail) => return Err(KeyLookupError::Unavailable(detail)),
            Cached::Fetch => {}
        }
        let fetched = self.inner.fetch_now().await;
        self.start_refresher();
        match self.inner.cached(kid, Instant::now()) {
            Cached::Fresh(key) | Cached::Stale(key) => Ok(key),
            Cached::Unknown => Err(KeyLookupError::UnknownKey(kid.to_owned())),
            Cached::Unavailable(detail) => Err(KeyLookupError::Unavailable(detail)),
            Cached::Fetch => match fetched {
                Ok(()) => Err(KeyLookupError::UnknownKey(kid.to_owned())),
                Err(error) => Err(KeyLookupError::Unavailable(error.message().to_owned())),
            },
        }
    }

    /// Starts the background refresh once keys have been fetched; it ends
    /// when the last clone of the key set is dropped.
    fn start_refresher(&self) {
        let fetched = self.inner.lock().fetched_at.is_some();
        if !fetched || self.inner.refresher_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(refresh_loop(weak));
    }
}

/// What the cache can say about a key id without fetching.
enum Cached {
    Fresh(Arc<DecodingKey>),
    Stale(Arc<DecodingKey>),
    Unknown,
    Unavailable(String),
    Fetch,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached(&self, kid: &str, now: Instant) -> Cached {
        let mut state = self.lock();
        let age = state.fetched_at.map(|at| now.saturating_duration_since(at));
        let backing_off = state.retry_at.is_some_and(|at| now < at);
        if let (Some(key), Some(age)) = (state.keys.get(kid).cloned(), age) {
            if age < self.options.cache_lifetime {
                return Cached::Fresh(key);
            }
            if age < self.options.cache_lifetime + self.options.max_stale
                && (backing_off || state.failures > 0)
            {
                marketbridge_telemetry::metrics().record_jwks_stale(&self.name);
                if !state.stale_warned {
                    state.stale_warned = true;
                    tracing::warn!(
                        key_set = %self.name,
                        url = %self.url,
                        age_seconds = age.as_secs(),
                        error = %state.last_error,
                        "the key endpoint fails; verifying with the keys fetched before"
                    );
                }
                return Cached::Stale(key);
            }
            if backing_off {
                return Cached::Unavailable(format!(
                    "the keys at {} are too old and fetching them fails: {}",
                    self.url, state.last_error
                ));
            }
            return Cached::Fetch;
        }
        if backing_off {
            return Cached::Unavailable(state.last_error.clone());
        }
        let fetched_recently = age.is_some_and(|age| age < self.options.unknown_key_interval);
        if fetched_recently && state.failures == 0 {
            return Cached::Unknown;
        }
        Cached::Fetch
    }

    /// How long until the next background fetch is due.
    fn next_refresh_in(&self, now: Instant) -> Duration {
        let state = self.lock();
        if let Some(retry_at) = state.retry_at {
            return retry_at.saturating_duration_since(now);
        }
        match state.fetched_at {
            Some(at) => (at + self.options.cache_lifetime * 3 / 4).saturating_duration_since(now),
            None => Duration::ZERO,
        }
    }

    /// Fetches the document and records the outcome: new keys, or one more
    /// failure and the time of the next attempt (the known keys are kept).
    async fn fetch_now(&self) -> Result<()> {
        let fetched = self.fetch().await;
        let now = Instant::now();
        let mut state = self.lock();
        match fetched {
            Ok(keys) => {
                if state.failures > 0 {
                    tracing::info!(key_set = %self.name, url = %self.url, "the key endpoint answers again");
                }
                tracing::debug!(key_set = %self.name, url = %self.url, keys = keys.len(), "signing keys fetched");
                state.keys = keys;
                state.fetched_at = Some(now);
                state.failures = 0;
                state.retry_at = None;
                state.last_error.clear();
                state.stale_warned = false;
                Ok(())
            }
            Err(error) => {
                state.failures = state.failures.saturating_add(1);
                let exponent = state.failures.saturating_sub(1).min(16);
                let delay = self
                    .options
                    .retry_initial
                    .saturating_mul(1 << exponent)
                    .min(self.options.retry_max);
                state.retry_at = Some(now + delay);
                state.last_error = error.message().to_owned();
                marketbridge_telemetry::metrics().record_jwks_fetch_failure(&self.name);
                tracing::warn!(
                    key_set = %self.name,
                    url = %self.url,
                    failures = state.failures,
                    retry_in_ms = delay.as_millis() as u64,
                    known_keys = state.keys.len(),
                    error = %error,
                    "fetching signing keys failed"
                );
                Err(error)
            }
        }
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
                    tracing::warn!(key_set = %self.name, kid = %kid, error = %error, "skipping an unreadable signing key")
                }
            }
        }
        Ok(keys)
    }
}

/// Refetches the keys before they expire, and retries failed fetches on
/// their backoff, for as long as the key set exists.
async fn refresh_loop(weak: Weak<Inner>) {
    loop {
        let wait = match weak.upgrade() {
            Some(inner) => inner.next_refresh_in(Instant::now()),
            None => return,
        };
        tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let _fetching = inner.fetching.lock().await;
        if inner.next_refresh_in(Instant::now()).is_zero() {
            let _ = inner.fetch_now().await;
        }
    }
}
