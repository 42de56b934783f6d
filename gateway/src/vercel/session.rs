//! Sessions of the provider page opened through SSO: a signed cookie
//! holding who signed in, for which installation, until when. The key is
//! `gateway.session_secret`, or one derived from the encryption key when
//! that is empty.

use crate::cookies::cookie_named;
use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use marketbridge_config::Config;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Name of the session cookie.
pub const COOKIE_NAME: &str = "mb_vercel_session";
/// How long a session lasts, in seconds.
pub const SESSION_SECONDS: i64 = 8 * 3600;

type HmacSha256 = Hmac<Sha256>;

/// Who signed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The installation.
    pub installation_id: String,
    /// The Vercel user.
    pub user_id: String,
    /// Their role.
    pub user_role: String,
    /// Their name, when Vercel gave it.
    #[serde(default)]
    pub user_name: String,
    /// Their e-mail, when Vercel gave it.
    #[serde(default)]
    pub user_email: String,
    /// Expiry, epoch seconds.
    pub expires_at: i64,
}

/// The key sessions are signed with.
#[derive(Clone)]
pub struct SessionKey {
    key: [u8; 32],
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// The key from `gateway.session_secret` (resolved and validated at
    /// start; never derived from the encryption key). Without one, sessions
    /// use a key of this process only.
    pub fn from_config(config: &Config) -> Self {
        let material = if !config.gateway.session_secret.is_empty() {
            format!("session-secret:{}", config.gateway.session_secret)
        } else {
            tracing::warn!("no session secret is configured; sessions last until restart");
            format!("random:{}", marketbridge_core::crypto::random_token(32))
        };
        let mut digest = Sha256::new();
        digest.update(b"marketbridge vercel session v1\n");
        digest.update(material.as_bytes());
        Self {
            key: digest.finalize().into(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length.
        <HmacSha256 as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!())
    }

    /// The cookie value of `session`: payload and signature, both base64url.
    pub fn seal(&self, session: &Session) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(session).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{payload}.{signature}")
    }

    /// The session in a cookie value, when the signature holds and it has
    /// not expired at `now` (epoch seconds).
    pub fn open(&self, value: &str, now: i64) -> Option<Session> {
        let (payload, signature) = value.split_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_slice(&signature).ok()?;
        let session: Session =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (session.expires_at > now).then_some(session)
    }
}

impl SessionKey {
    /// `value` signed for `purpose` (payload and signature, base64url), so
    /// it can travel through a browser and come back unchanged.
    pub fn seal_for<T: Serialize>(&self, purpose: &str, value: &T) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(purpose.as_bytes());
        mac.update(b"\n");
        mac.update(payload.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{payload}.{signature}")
    }

    /// The value [`SessionKey::seal_for`] sealed for `purpose`, when its
    /// signature holds.
    pub fn open_for<T: serde::de::DeserializeOwned>(
        &self,
        purpose: &str,
        sealed: &str,
    ) -> Option<T> {
        let (payload, signature) = sealed.split_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let mut mac = self.mac();
        mac.update(purpose.as_bytes());
        mac.update(b"\n");
        mac.update(payload.as_bytes());
        mac.verify_slice(&signature).ok()?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
    }
}

/// The `Set-Cookie` value opening `sealed` for `path`.
pub fn set_cookie(sealed: &str, path: &str, secure: bool) -> String {
    let path = if path.is_empty() { "/" } else { path };
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE_NAME}={sealed}; Path={path}; Max-Age={SESSION_SECONDS}; HttpOnly; SameSite=Lax{secure}"
    )
}

/// The session cookie of a request, if any.
pub fn cookie_value(headers: &HeaderMap) -> Option<String> {
    cookie_named(headers, COOKIE_NAME)
}

/// Cookie binding a sign-in to the browser that started it: a random nonce
/// set when the browser is sent to Vercel's sign-in, and sent along as
/// [`SSO_STATE_PARAM`] in the query Vercel passes back.
pub const SSO_STATE_COOKIE: &str = "mb_vercel_sso_state";
/// Query parameter carrying the nonce through Vercel's sign-in.
pub const SSO_STATE_PARAM: &str = "mb_state";
/// How long a started sign-in may take, in seconds.
pub const SSO_STATE_SECONDS: i64 = 600;

/// A fresh sign-in nonce.
pub fn new_sso_state() -> String {
    marketbridge_core::crypto::random_token(24)
}

/// The `Set-Cookie` value holding the sign-in nonce for `path`.
pub fn set_sso_state_cookie(nonce: &str, path: &str, secure: bool) -> String {
    let path = if path.is_empty() { "/" } else { path };
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{SSO_STATE_COOKIE}={nonce}; Path={path}; Max-Age={SSO_STATE_SECONDS}; HttpOnly; SameSite=Lax{secure}"
    )
}

/// The `Set-Cookie` value removing the sign-in nonce.
pub fn clear_sso_state_cookie(path: &str, secure: bool) -> String {
    let path = if path.is_empty() { "/" } else { path };
    let secure = if secure { "; Secure" } else { "" };
    format!("{SSO_STATE_COOKIE}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Lax{secure}")
}

/// Cookie holding a sign-in Vercel started that waits for the person to
/// confirm it in this browser: `<nonce>~<sealed session>~<landing page>`.
pub const SSO_PENDING_COOKIE: &str = "mb_vercel_sso_pending";

/// The `Set-Cookie` value holding a pending sign-in for `path`.
pub fn set_pending_cookie(value: &str, path: &str, secure: bool) -> String {
    let path = if path.is_empty() { "/" } else { path };
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{SSO_PENDING_COOKIE}={value}; Path={path}; Max-Age={SSO_STATE_SECONDS}; HttpOnly; SameSite=Lax{secure}"
    )
}

/// The `Set-Cookie` value removing a pending sign-in.
pub fn clear_pending_cookie(path: &str, secure: bool) -> String {
    let path = if path.is_empty() { "/" } else { path };
    let secure = if secure { "; Secure" } else { "" };
    format!("{SSO_PENDING_COOKIE}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Lax{secure}")
}

/// True when the request's nonce cookie is `nonce` (compared in constant
/// time).
pub fn sso_state_matches(headers: &HeaderMap, nonce: &str) -> bool {
    let Some(cookie) = cookie_named(headers, SSO_STATE_COOKIE) else {
        return false;
    };
    !nonce.is_empty()
        && cookie.len() == nonce.len()
        && bool::from(subtle::ConstantTimeEq::ct_eq(
            cookie.as_bytes(),
            nonce.as_bytes(),
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(expires_at: i64) -> Session {
        Session {
            installation_id: "icfg_a".into(),
            user_id: "u1".into(),
            user_role: "ADMIN".into(),
            user_name: String::new(),
            user_email: String::new(),
            expires_at,
        }
    }

    #[test]
    fn sealed_sessions_open_only_with_the_key_and_in_time() {
        let mut config = Config::default();
        config.gateway.session_secret = "s".repeat(40);
        let key = SessionKey::from_config(&config);
        let sealed = key.seal(&session(100));
        assert_eq!(key.open(&sealed, 99), Some(session(100)));
        assert_eq!(key.open(&sealed, 100), None);
        config.gateway.session_secret = "t".repeat(40);
        assert_eq!(SessionKey::from_config(&config).open(&sealed, 0), None);
        let (payload, signature) = sealed.split_once('.').unwrap();
        let forged = format!("{}x.{signature}", payload);
        assert_eq!(key.open(&forged, 0), None);
        assert!(set_cookie("v", "/vercel", true).contains("HttpOnly; SameSite=Lax; Secure"));
        assert!(!set_cookie("v", "", false).contains("Secure"));
    }
}
