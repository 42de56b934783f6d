//! What both of Google's token kinds share: RS256 signatures checked against
//! a [`KeySet`], claims checked against our own clock, and a rejection that
//! says exactly what was wrong.

use crate::jwks::{KeyLookupError, KeySet};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, Validation};
use marketbridge_core::{Error, ErrorCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt;

/// Tolerated clock difference when checking `exp` and `iat`, in seconds.
pub const CLOCK_SKEW_SECONDS: i64 = 30;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// No token was presented.
    Missing,
    /// The text is not a JWT.
    Malformed,
    /// Signed with another algorithm than RS256.
    Algorithm,
    /// Signed with a key the issuer does not publish.
    UnknownKey,
    /// The signature does not verify.
    Signature,
    /// `exp` has passed.
    Expired,
    /// `iat` is in the future.
    NotYetValid,
    /// `iss` is not trusted.
    Issuer,
    /// `aud` is not ours.
    Audience,
    /// `sub` is empty.
    Subject,
    /// Issued to another service account.
    ServiceAccount,
    /// `email_verified` is not true.
    EmailNotVerified,
    /// The issuer's keys could not be fetched.
    KeysUnavailable,
}

impl RejectReason {
    /// A stable snake_case name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Missing => "missing",
            RejectReason::Malformed => "malformed",
            RejectReason::Algorithm => "algorithm",
            RejectReason::UnknownKey => "unknown_key",
            RejectReason::Signature => "signature",
            RejectReason::Expired => "expired",
            RejectReason::NotYetValid => "not_yet_valid",
            RejectReason::Issuer => "issuer",
            RejectReason::Audience => "audience",
            RejectReason::Subject => "subject",
            RejectReason::ServiceAccount => "service_account",
            RejectReason::EmailNotVerified => "email_not_verified",
            RejectReason::KeysUnavailable => "keys_unavailable",
        }
    }
}

/// A refused token: the reason and a message for developers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRejected {
    /// Why.
    pub reason: RejectReason,
    /// What exactly.
    pub message: String,
}

impl TokenRejected {
    /// A rejection.
    pub fn new(reason: RejectReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

impl fmt::Display for TokenRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TokenRejected {}

impl From<TokenRejected> for Error {
    fn from(rejected: TokenRejected) -> Self {
        let code = match rejected.reason {
            RejectReason::KeysUnavailable => ErrorCode::Unavailable,
            RejectReason::ServiceAccount | RejectReason::EmailNotVerified => {
                ErrorCode::PermissionDenied
            }
            _ => ErrorCode::Unauthenticated,
        };
        Error::new(code, rejected.message)
    }
}

/// Verifies the RS256 signature of `token` with the key its `kid` names in
/// `keys`, and returns its claims (not yet checked).
pub async fn verified_claims<T: DeserializeOwned>(
    keys: &KeySet,
    token: &str,
    what: &str,
) -> Result<T, TokenRejected> {
    let token = token.trim();
    if token.is_empty() {
        return Err(TokenRejected::new(
            RejectReason::Missing,
            format!("no {what} was presented"),
        ));
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| {
        TokenRejected::new(
            RejectReason::Malformed,
            format!("the {what} is not a well-formed JWT"),
        )
    })?;
    if header.alg != Algorithm::RS256 {
        return Err(TokenRejected::new(
            RejectReason::Algorithm,
            format!(
                "the {what} is signed with {:?}; only RS256 is accepted",
                header.alg
            ),
        ));
    }
    let kid = header.kid.filter(|k| !k.is_empty()).ok_or_else(|| {
        TokenRejected::new(
            RejectReason::UnknownKey,
            format!("the {what} names no signing key (kid)"),
        )
    })?;
    let key = keys.key(&kid).await.map_err(|error| match error {
        KeyLookupError::UnknownKey(kid) => TokenRejected::new(
            RejectReason::UnknownKey,
            format!("the {what} is signed with key `{kid}`, which its issuer does not publish"),
        ),
        KeyLookupError::Unavailable(detail) => TokenRejected::new(
            RejectReason::KeysUnavailable,
            format!("the signing keys for the {what} cannot be fetched: {detail}"),
        ),
    })?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<T>(token, &key, &validation).map_err(|error| {
        use jsonwebtoken::errors::ErrorKind;
        match error.kind() {
            ErrorKind::InvalidSignature => TokenRejected::new(
                RejectReason::Signature,
                format!("the {what}'s signature does not verify"),
            ),
            _ => TokenRejected::new(
                RejectReason::Malformed,
                format!("the {what} cannot be read: {error}"),
            ),
        }
    })?;
    Ok(data.claims)
}

/// Checks `exp` (required) and `iat` (optional) against `now`.
pub fn check_lifetime(
    what: &str,
    now: DateTime<Utc>,
    issued_at: Option<i64>,
    expires_at: Option<i64>,
) -> Result<(), TokenRejected> {
    let now = now.timestamp();
    let expires_at = expires_at.ok_or_else(|| {
        TokenRejected::new(
            RejectReason::Malformed,
            format!("the {what} has no expiry (exp)"),
        )
    })?;
    if now > expires_at + CLOCK_SKEW_SECONDS {
        return Err(TokenRejected::new(
            RejectReason::Expired,
            format!(
                "the {what} expired {} seconds ago",
                now.saturating_sub(expires_at)
            ),
        ));
    }
    if let Some(issued_at) = issued_at
        && issued_at > now + CLOCK_SKEW_SECONDS
    {
        return Err(TokenRejected::new(
            RejectReason::NotYetValid,
            format!("the {what} was issued in the future"),
        ));
    }
    Ok(())
}

/// True when `aud` (a string or an array of strings) contains `expected`.
pub fn audience_matches(aud: Option<&Value>, expected: &str) -> bool {
    match aud {
        Some(Value::String(single)) => single == expected,
        Some(Value::Array(many)) => many.iter().any(|v| v.as_str() == Some(expected)),
        _ => false,
    }
}

/// The audience claim as text, for messages.
pub fn audience_text(aud: Option<&Value>) -> String {
    match aud {
        Some(Value::String(single)) => single.clone(),
        Some(other) => other.to_string(),
        None => "(none)".to_owned(),
    }
}
