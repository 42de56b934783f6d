//! The operator's session: a cookie sealed (HMAC-SHA256) with a key derived
//! from `gateway.session_secret`, holding the operator's name, their gRPC
//! token encrypted (AES-256-GCM, a second key derived from the same secret),
//! the CSRF token of their forms and the expiry. The gateway stores nothing.

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use marketbridge_config::Config;
use marketbridge_core::crypto::{Cipher, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Name of the session cookie.
pub const COOKIE_NAME: &str = "mb_console";
/// Name of the cookie binding the sign-in form to the browser.
pub const SIGN_IN_COOKIE: &str = "mb_console_sign_in";
/// The path both cookies are scoped to.
pub const COOKIE_PATH: &str = "/console";

type HmacSha256 = Hmac<Sha256>;

/// A signed-in operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleSession {
    /// The gRPC caller's name.
    pub operator: String,
    /// Its bearer token, encrypted.
    pub token: String,
    /// The token every form of the session carries.
    pub csrf: String,
    /// Expiry, epoch seconds.
    pub expires_at: i64,
}

/// The keys sessions are sealed with.
#[derive(Clone)]
pub struct ConsoleKeys {
    mac: [u8; 32],
    cipher: Cipher,
    /// Session lifetime, seconds.
    pub lifetime: i64,
    /// Whether cookies need HTTPS.
    pub secure: bool,
}

impl std::fmt::Debug for ConsoleKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsoleKeys(..)")
    }
}

fn derive(label: &str, material: &str) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(label.as_bytes());
    digest.update(b"\n");
    digest.update(material.as_bytes());
    digest.finalize().into()
}

impl ConsoleKeys {
    /// Keys from `gateway.session_secret` (a key of this process only when
    /// it is empty: sessions then end with the process).
    pub fn from_config(config: &Config) -> Self {
        let material = if config.gateway.session_secret.is_empty() {
            format!("random:{}", marketbridge_core::crypto::random_token(32))
        } else {
            format!("session-secret:{}", config.gateway.session_secret)
        };
        let cipher_key = STANDARD.encode(derive("marketbridge console token v1", &material));
        Self {
            mac: derive("marketbridge console session v1", &material),
            cipher: Cipher::from_base64_key(&cipher_key)
                .unwrap_or_else(|_| unreachable!("a derived key has 32 bytes")),
            lifetime: config
                .gateway
                .console_session_seconds
                .clamp(60, 30 * 86_400) as i64,
            secure: config.gateway.public_url.starts_with("https://")
                || !config.tls.gateway_cert.is_empty(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        <HmacSha256 as Mac>::new_from_slice(&self.mac).unwrap_or_else(|_| unreachable!())
    }

    /// A new session of `operator` holding `token`, from `now`.
    pub fn start(&self, operator: &str, token: &str, now: i64) -> Option<ConsoleSession> {
        Some(ConsoleSession {
            operator: operator.to_owned(),
            token: self.cipher.encrypt(token).ok()?,
            csrf: marketbridge_core::crypto::random_token(24),
            expires_at: now + self.lifetime,
        })
    }

    /// The operator's token.
    pub fn token(&self, session: &ConsoleSession) -> Option<SecretString> {
        self.cipher.decrypt(&session.token).ok()
    }

    /// The cookie value of `session`.
    pub fn seal(&self, session: &ConsoleSession) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(session).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{payload}.{signature}")
    }

    /// The session in a cookie value, when its seal holds and it has not
    /// expired at `now`.
    pub fn open(&self, value: &str, now: i64) -> Option<ConsoleSession> {
        let (payload, signature) = value.split_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_slice(&signature).ok()?;
        let session: ConsoleSession =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (session.expires_at > now).then_some(session)
    }

    /// `Set-Cookie` for `name` = `value`, living `max_age` seconds.
    pub fn cookie(&self, name: &str, value: &str, max_age: i64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "{name}={value}; Path={COOKIE_PATH}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
        )
    }
}

/// The cookie `name` of a request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    crate::cookies::cookie_named(headers, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_open_only_sealed_with_the_key_and_in_time() {
        let mut config = Config::default();
        config.gateway.session_secret = "s".repeat(40);
        let keys = ConsoleKeys::from_config(&config);
        let session = keys.start("ops", "tok-123", 100).unwrap();
        assert!(!session.token.contains("tok-123"));
        let sealed = keys.seal(&session);
        assert!(!sealed.contains("tok-123"));
        let opened = keys.open(&sealed, 101).unwrap();
        assert_eq!(keys.token(&opened).unwrap().expose(), "tok-123");
        assert_eq!(keys.open(&sealed, 100 + keys.lifetime), None);
        config.gateway.session_secret = "t".repeat(40);
        assert_eq!(ConsoleKeys::from_config(&config).open(&sealed, 101), None);
        let cookie = keys.cookie(COOKIE_NAME, &sealed, 10);
        assert!(cookie.contains("HttpOnly; SameSite=Strict"));
        assert!(!cookie.contains("Secure"));
    }
}
