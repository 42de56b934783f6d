//! Verifying the OIDC tokens Vercel signs: the `Authorization` bearer of
//! every partner API call, and the `id_token` of the SSO exchange.
//!
//! Tokens must be RS256 with a `kid` from Vercel's JWKS (cached by
//! `marketbridge_rpc::jwks`: refreshed in the background, fetched again when
//! a token names a key not seen yet, used stale while the endpoint fails), issued
//! by the configured issuer for our integration client id, and unexpired
//! (ten seconds of leeway). `alg: none`, HS256 and every other algorithm are
//! refused before any key is looked at.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use marketbridge_core::{Error, Result};
use marketbridge_rpc::jwks::{KeyLookupError, KeySet, KeySetOptions};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The `key_set` name of Vercel's keys in metrics and logs.
pub const KEY_SET: &str = "vercel";
/// Least time between two fetches caused by unknown key ids.
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(5);
/// Clock skew tolerated on `exp`, in seconds.
pub const LEEWAY_SECONDS: u64 = 10;

/// Which kind of caller a token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// A Vercel user acting in the dashboard (`X-Vercel-Auth: user`).
    User,
    /// Vercel itself (`X-Vercel-Auth: system`).
    System,
}

impl AuthKind {
    /// Reads the `X-Vercel-Auth` header (case-insensitive).
    pub fn from_header(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "user" => Some(AuthKind::User),
            "system" => Some(AuthKind::System),
            _ => None,
        }
    }
}

/// The role of a user in the team.
pub mod role {
    /// May change things.
    pub const ADMIN: &str = "ADMIN";
    /// Read-only (billing or viewer roles).
    pub const USER: &str = "USER";
}

/// The claims of a Vercel token (snake_case). User tokens carry the `user_*`
/// claims; system tokens may lack the installation and account.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    #[serde(default)]
    pub iss: String,
    /// Subject: `account:<hex>:user:<hex>` or `account:<hex>`.
    #[serde(default)]
    pub sub: Option<String>,
    /// The team.
    #[serde(default)]
    pub account_id: Option<String>,
    /// The installation (`icfg_...`).
    #[serde(default)]
    pub installation_id: Option<String>,
    /// The user.
    #[serde(default)]
    pub user_id: Option<String>,
    /// `ADMIN` or `USER`.
    #[serde(default)]
    pub user_role: Option<String>,
    /// Verified e-mail address.
    #[serde(default)]
    pub user_email: Option<String>,
    /// Display name.
    #[serde(default)]
    pub user_name: Option<String>,
    /// Avatar.
    #[serde(default)]
    pub user_avatar_url: Option<String>,
    /// `access_token` or `id_token`.
    #[serde(default, rename = "type")]
    pub token_type: Option<String>,
    /// Expiry, epoch seconds.
    #[serde(default)]
    pub exp: Option<u64>,
    /// Issued at, epoch seconds.
    #[serde(default)]
    pub iat: Option<u64>,
    /// Not before, epoch seconds.
    #[serde(default)]
    pub nbf: Option<u64>,
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claims")
            .field("sub", &self.sub)
            .field("account_id", &self.account_id)
            .field("installation_id", &self.installation_id)
            .field("user_id", &self.user_id)
            .field("user_role", &self.user_role)
            .finish_non_exhaustive()
    }
}

/// The values of the `type` claim.
pub mod token_type {
    /// A bearer for partner API calls.
    pub const ACCESS: &str = "access_token";
    /// The user's identity from the SSO exchange.
    pub const ID: &str = "id_token";
}

/// What a token is presented for; each use takes one `type` of token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    /// The bearer of a partner API call (`type: "access_token"`).
    PartnerCall,
    /// The `id_token` of the SSO exchange (`type: "id_token"`).
    SignIn,
}

impl TokenUse {
    /// The `type` claim this use takes.
    pub fn token_type(self) -> &'static str {
        match self {
            TokenUse::PartnerCall => token_type::ACCESS,
            TokenUse::SignIn => token_type::ID,
        }
    }
}

/// Default for the longest lifetime (`exp` minus `iat`) accepted, in
/// seconds (`vercel.token_max_lifetime_seconds`).
pub const DEFAULT_MAX_LIFETIME_SECONDS: u64 = 24 * 3600;

/// The time rules of a token beyond `exp`: `nbf` and `iat` may not lie
/// ahead of now by more than the leeway, and no token lives longer than
/// `max_lifetime_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRules {
    /// Clock skew tolerated, in seconds.
    pub leeway_seconds: u64,
    /// Longest lifetime accepted, in seconds.
    pub max_lifetime_seconds: u64,
}

impl Default for TimeRules {
    fn default() -> Self {
        Self {
            leeway_seconds: LEEWAY_SECONDS,
            max_lifetime_seconds: DEFAULT_MAX_LIFETIME_SECONDS,
        }
    }
}

impl TimeRules {
    /// The rules with `max_lifetime_seconds` (0 keeps the default).
    pub fn with_max_lifetime(max_lifetime_seconds: u64) -> Self {
        Self {
            max_lifetime_seconds: if max_lifetime_seconds == 0 {
                DEFAULT_MAX_LIFETIME_SECONDS
            } else {
                max_lifetime_seconds
            },
            ..Self::default()
        }
    }
}

impl Claims {
    /// True when the token names a user (`user_id` and `user_role`).
    pub fn has_user(&self) -> bool {
        self.user_id.as_deref().is_some_and(|u| !u.is_empty())
            && self.user_role.as_deref().is_some_and(|r| !r.is_empty())
    }

    /// True when any claim speaks of a user: a user id, role or e-mail, or
    /// a subject of the user form. Such a token is a user token whatever
    /// `X-Vercel-Auth` says, and must then carry everything a user token
    /// carries.
    pub fn names_user(&self) -> bool {
        let present = |claim: &Option<String>| claim.as_deref().is_some_and(|v| !v.is_empty());
        present(&self.user_id)
            || present(&self.user_role)
            || present(&self.user_email)
            || self
                .sub
                .as_deref()
                .is_some_and(|sub| sub.contains(":user:"))
    }

    /// True for a user with the ADMIN role.
    pub fn is_admin(&self) -> bool {
        self.user_role.as_deref() == Some(role::ADMIN)
    }

    /// Checks the claims fit `kind`: a user token names its user, its role
    /// and a `sub` of the user form (`account:<hex>:user:<hex>`); a system
    /// token names no user, and its `sub`, when present, has the system
    /// form (`account:<hex>`).
    pub fn check_kind(&self, kind: AuthKind) -> Result<()> {
        match kind {
            AuthKind::User => {
                if !self.has_user() {
                    return Err(Error::unauthenticated(
                        "a user token must carry user_id and user_role",
                    ));
                }
                if !self.sub.as_deref().is_some_and(is_user_subject) {
                    return Err(Error::unauthenticated(
                        "the token subject is not a user subject",
                    ));
                }
                Ok(())
            }
            AuthKind::System => {
                if self.names_user() {
                    return Err(Error::unauthenticated(
                        "a token naming a user is not a system token",
                    ));
                }
                if let Some(sub) = &self.sub
                    && !is_system_subject(sub)
                {
                    return Err(Error::unauthenticated(
                        "the token subject is not a system subject",
                    ));
                }
                Ok(())
            }
        }
    }

    /// Checks the token is the type `token_use` takes. The claim is
    /// optional in the contract, so a token without it passes; a token of
    /// the other type does not.
    pub fn check_use(&self, token_use: TokenUse) -> Result<()> {
        match self.token_type.as_deref() {
            None => Ok(()),
            Some(found) if found == token_use.token_type() => Ok(()),
            Some(found) => Err(Error::unauthenticated(format!(
                "a token of type `{found}` cannot be used here; `{}` is required",
                token_use.token_type()
            ))),
        }
    }

    /// Checks `nbf`, `iat` and the lifetime at `now` (epoch seconds);
    /// `exp` itself is checked with the signature.
    pub fn check_times(&self, now: u64, rules: TimeRules) -> Result<()> {
        let horizon = now.saturating_add(rules.leeway_seconds);
        if self.nbf.is_some_and(|nbf| nbf > horizon) {
            return Err(Error::unauthenticated("the token is not valid yet"));
        }
        if self.iat.is_some_and(|iat| iat > horizon) {
            return Err(Error::unauthenticated("the token was issued in the future"));
        }
        let exp = self
            .exp
            .ok_or_else(|| Error::unauthenticated("the token lacks a required claim"))?;
        let start = self.iat.or(self.nbf).unwrap_or(now);
        if exp.saturating_sub(start) > rules.max_lifetime_seconds {
            return Err(Error::unauthenticated(format!(
                "the token lives longer than {} seconds",
                rules.max_lifetime_seconds
            )));
        }
        Ok(())
    }

    /// Every check of a verified token presented as `kind` for `token_use`
    /// at `now` (epoch seconds).
    pub fn check(
        &self,
        kind: AuthKind,
        token_use: TokenUse,
        now: u64,
        rules: TimeRules,
    ) -> Result<()> {
        self.check_times(now, rules)?;
        self.check_use(token_use)?;
        self.check_kind(kind)
    }
}

/// Now, in epoch seconds.
pub fn now_epoch_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn is_hex(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `account:<hex>:user:<hex>`.
fn is_user_subject(sub: &str) -> bool {
    let parts: Vec<&str> = sub.split(':').collect();
    matches!(parts.as_slice(), ["account", account, "user", user] if is_hex(account) && is_hex(user))
}

/// `account:<hex>`.
fn is_system_subject(sub: &str) -> bool {
    matches!(sub.split_once(':'), Some(("account", account)) if is_hex(account))
}

/// Most tokens remembered as verified (see [`OidcVerifier`]).
pub const VERIFIED_TOKEN_CAPACITY: usize = 10_000;

/// Verifies Vercel's tokens against its published keys.
///
/// A token whose signature and claims passed is remembered (by its SHA-256,
/// with its claims, the key that verified it and its `exp`) in a bounded
/// cache, so the same token presented again costs a hash instead of an RSA
/// check. A remembered token is still refused once it expires (with the
/// same leeway), and is checked again in full when the key set no longer
/// holds the very key that verified it (rotated out, or replaced).
pub struct OidcVerifier {
    keys: KeySet,
    issuer: String,
    audience: String,
    verified: Mutex<VerifiedTokens>,
}

/// Tokens already verified, by SHA-256.
#[derive(Default)]
struct VerifiedTokens {
    entries: HashMap<[u8; 32], Verified>,
    hits: u64,
}

struct Verified {
    claims: Claims,
    kid: String,
    key: Arc<DecodingKey>,
    exp: u64,
}

impl VerifiedTokens {
    fn remember(&mut self, digest: [u8; 32], verified: Verified, now: u64) {
        if self.entries.len() >= VERIFIED_TOKEN_CAPACITY {
            self.entries
                .retain(|_, entry| entry.exp.saturating_add(LEEWAY_SECONDS) >= now);
        }
        if self.entries.len() >= VERIFIED_TOKEN_CAPACITY {
            // Full of live tokens: start again rather than grow.
            self.entries.clear();
        }
        self.entries.insert(digest, verified);
    }
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("jwks_url", &self.keys.url())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl OidcVerifier {
    /// A verifier of tokens from `issuer` for `audience` (the integration
    /// client id), with keys from `jwks_url`.
    pub fn new(http: reqwest::Client, jwks_url: &str, issuer: &str, audience: &str) -> Self {
        let keys = KeySet::new(http, jwks_url)
            .named(KEY_SET)
            .with_refresh_interval(JWKS_REFETCH_INTERVAL);
        Self {
            keys,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            verified: Mutex::new(VerifiedTokens::default()),
        }
    }

    /// How many verifications were answered from remembered tokens.
    pub fn remembered_hits(&self) -> u64 {
        self.remembered().hits
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, VerifiedTokens> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The claims of `token` if it was verified before, is unexpired and
    /// its key is still the one the key set holds under its `kid`.
    async fn recall(&self, digest: &[u8; 32]) -> Option<Result<Claims>> {
        let (kid, key, exp) = {
            let remembered = self.remembered();
            let entry = remembered.entries.get(digest)?;
            (entry.kid.clone(), entry.key.clone(), entry.exp)
        };
        if exp.saturating_add(LEEWAY_SECONDS) < now_epoch_seconds() {
            self.remembered().entries.remove(digest);
            return Some(Err(Error::unauthenticated("the token has expired")));
        }
        match self.keys.key(&kid).await {
            Ok(current) if Arc::ptr_eq(&current, &key) => {
                let mut remembered = self.remembered();
                remembered.hits += 1;
                remembered
                    .entries
                    .get(digest)
                    .map(|entry| Ok(entry.claims.clone()))
            }
            _ => {
                // The key changed or went: check the token again in full.
                self.remembered().entries.remove(digest);
                None
            }
        }
    }

    /// Changes how keys are cached, refreshed and used stale.
    pub fn with_key_options(mut self, options: KeySetOptions) -> Self {
        self.keys = self.keys.with_options(options);
        self
    }

    /// Changes the least time between fetches caused by unknown key ids.
    pub fn with_refetch_interval(mut self, interval: Duration) -> Self {
        self.keys = self.keys.with_refresh_interval(interval);
        self
    }

    /// Verifies `token` and returns its claims. Every failure is
    /// `unauthenticated`, except an unreachable JWKS (`unavailable`).
    pub async fn verify(&self, token: &str) -> Result<Claims> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(recalled) = self.recall(&digest).await {
            return recalled;
        }
        let header = decode_header(token)
            .map_err(|_| Error::unauthenticated("the token is not a signed JWT"))?;
        if header.alg != Algorithm::RS256 {
            return Err(Error::unauthenticated(format!(
                "tokens must be signed with RS256, not {:?}",
                header.alg
            )));
        }
        let kid = header
            .kid
            .filter(|k| !k.is_empty())
            .ok_or_else(|| Error::unauthenticated("the token names no signing key (kid)"))?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = LEEWAY_SECONDS;
        let data = decode::<Claims>(token, &key, &validation).map_err(describe_rejection)?;
        if let Some(exp) = data.claims.exp {
            let verified = Verified {
                claims: data.claims.clone(),
                kid,
                key,
                exp,
            };
            self.remembered()
                .remember(digest, verified, now_epoch_seconds());
        }
        Ok(data.claims)
    }

    async fn key(&self, kid: &str) -> Result<Arc<DecodingKey>> {
        self.keys.key(kid).await.map_err(|error| match error {
            KeyLookupError::UnknownKey(kid) => unknown_key(&kid),
            KeyLookupError::Unavailable(detail) => {
                Error::unavailable(format!("Vercel's signing keys: {detail}"))
            }
        })
    }
}

fn unknown_key(kid: &str) -> Error {
    Error::unauthenticated(format!("the token was signed with an unknown key `{kid}`"))
}

fn describe_rejection(error: jsonwebtoken::errors::Error) -> Error {
    use jsonwebtoken::errors::ErrorKind;
    let reason = match error.kind() {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::InvalidIssuer => "the token was issued by someone else",
        ErrorKind::InvalidAudience => "the token is meant for another integration",
        ErrorKind::InvalidSignature => "the token signature is invalid",
        ErrorKind::ImmatureSignature => "the token is not valid yet",
        ErrorKind::InvalidAlgorithm => "the token algorithm is not allowed",
        ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
        _ => "the token is invalid",
    };
    Error::unauthenticated(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_subjects_and_kinds() {
        assert!(is_user_subject("account:0a1b:user:ff00"));
        assert!(!is_user_subject("account:0a1b"));
        assert!(!is_user_subject("account:xyz:user:00"));
        assert_eq!(AuthKind::from_header(" USER "), Some(AuthKind::User));
        assert_eq!(AuthKind::from_header("System"), Some(AuthKind::System));
        assert_eq!(AuthKind::from_header("robot"), None);
        let claims = Claims {
            user_id: Some("u1".into()),
            user_role: Some("ADMIN".into()),
            sub: Some("account:01:user:02".into()),
            ..Default::default()
        };
        assert!(claims.check_kind(AuthKind::User).is_ok());
        assert!(claims.is_admin());
        assert!(Claims::default().check_kind(AuthKind::User).is_err());
        assert!(Claims::default().check_kind(AuthKind::System).is_ok());
    }

    #[test]
    fn subjects_fit_the_kind_and_any_user_claim_makes_a_user() {
        let system = Claims {
            sub: Some("account:0a1b".into()),
            ..Default::default()
        };
        assert!(system.check_kind(AuthKind::System).is_ok());
        for sub in [
            "account:zz",
            "account:",
            "team:0a",
            "account:0a:user:",
            "0a",
        ] {
            let malformed = Claims {
                sub: Some(sub.into()),
                ..Default::default()
            };
            assert!(malformed.check_kind(AuthKind::System).is_err(), "{sub}");
        }
        let roleless = Claims {
            sub: Some("account:01:user:02".into()),
            user_id: Some("02".into()),
            ..Default::default()
        };
        assert!(roleless.names_user() && !roleless.has_user());
        assert!(roleless.check_kind(AuthKind::System).is_err());
        assert!(roleless.check_kind(AuthKind::User).is_err());
        let subjectless = Claims {
            user_id: Some("02".into()),
            user_role: Some("ADMIN".into()),
            ..Default::default()
        };
        assert!(subjectless.check_kind(AuthKind::User).is_err());
    }

    #[test]
    fn types_and_times_are_checked() {
        let now = 1_000_000;
        let rules = TimeRules::default();
        let fresh = Claims {
            iat: Some(now),
            exp: Some(now + 3600),
            token_type: Some("access_token".into()),
            ..Default::default()
        };
        assert!(fresh.check_times(now, rules).is_ok());
        assert!(fresh.check_use(TokenUse::PartnerCall).is_ok());
        assert!(fresh.check_use(TokenUse::SignIn).is_err());
        let untyped = Claims {
            token_type: None,
            ..fresh.clone()
        };
        assert!(untyped.check_use(TokenUse::SignIn).is_ok());
        let skewed = Claims {
            nbf: Some(now + LEEWAY_SECONDS),
            iat: Some(now + LEEWAY_SECONDS),
            ..fresh.clone()
        };
        assert!(skewed.check_times(now, rules).is_ok());
        let early = Claims {
            nbf: Some(now + 600),
            ..fresh.clone()
        };
        assert!(early.check_times(now, rules).is_err());
        let ahead = Claims {
            iat: Some(now + 365 * 24 * 3600),
            exp: Some(now + 365 * 24 * 3600 + 60),
            ..fresh.clone()
        };
        assert!(ahead.check_times(now, rules).is_err());
        let eternal = Claims {
            exp: Some(now + 10 * 365 * 24 * 3600),
            ..fresh.clone()
        };
        assert!(eternal.check_times(now, rules).is_err());
        let no_iat = Claims {
            iat: None,
            ..eternal
        };
        assert!(no_iat.check_times(now, rules).is_err());
        assert!(
            fresh
                .check_times(now, TimeRules::with_max_lifetime(600))
                .is_err()
        );
    }
}
