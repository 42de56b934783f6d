//! Authentication of Pub/Sub push deliveries: the `Authorization: Bearer`
//! OIDC token Pub/Sub signs with Google's keys for the push service account.
//! Checked: RS256 signature (keys cached by `kid`), trusted `iss`, our
//! audience, `exp`, the expected service account `email` and
//! `email_verified`.

use crate::jwks::KeySet;
use crate::token::{
    RejectReason, TokenRejected, audience_matches, audience_text, check_lifetime, verified_claims,
};
use marketbridge_core::time::SharedClock;
use serde::Deserialize;
use serde_json::Value;

/// The claims of a push token that we read.
#[derive(Debug, Clone, Deserialize)]
struct PushClaims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<Value>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<Value>,
    #[serde(default)]
    sub: Option<String>,
}

/// Who sent a verified push delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushIdentity {
    /// The push service account.
    pub email: String,
    /// Its subject id.
    pub subject: String,
}

/// Verifies push tokens.
#[derive(Debug)]
pub struct PushTokenVerifier {
    keys: KeySet,
    issuers: Vec<String>,
    audience: String,
    service_account: String,
    clock: SharedClock,
}

impl PushTokenVerifier {
    /// A verifier of tokens signed by `keys`, issued by one of `issuers`
    /// (comma-separated), for `audience` and the push `service_account`.
    pub fn new(
        keys: KeySet,
        issuers: &str,
        audience: &str,
        service_account: &str,
        clock: SharedClock,
    ) -> Self {
        Self {
            keys,
            issuers: issuers
                .split(',')
                .map(str::trim)
                .filter(|i| !i.is_empty())
                .map(str::to_owned)
                .collect(),
            audience: audience.trim().to_owned(),
            service_account: service_account.trim().to_owned(),
            clock,
        }
    }

    /// Verifies the value of an `Authorization` header.
    pub async fn verify_header(
        &self,
        authorization: Option<&str>,
    ) -> Result<PushIdentity, TokenRejected> {
        let token = authorization
            .map(str::trim)
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(token)
            })
            .ok_or_else(|| {
                TokenRejected::new(
                    RejectReason::Missing,
                    "the push delivery carries no Authorization: Bearer token",
                )
            })?;
        self.verify(token).await
    }

    /// Verifies a push token.
    pub async fn verify(&self, token: &str) -> Result<PushIdentity, TokenRejected> {
        let claims: PushClaims = verified_claims(&self.keys, token, "push token").await?;
        let issuer = claims.iss.unwrap_or_default();
        if !self.issuers.contains(&issuer) {
            return Err(TokenRejected::new(
                RejectReason::Issuer,
                format!("the push token's issuer `{issuer}` is not trusted"),
            ));
        }
        if self.audience.is_empty() || !audience_matches(claims.aud.as_ref(), &self.audience) {
            return Err(TokenRejected::new(
                RejectReason::Audience,
                format!(
                    "the push token is for audience `{}`, not this endpoint",
                    audience_text(claims.aud.as_ref())
                ),
            ));
        }
        check_lifetime("push token", self.clock.now(), claims.iat, claims.exp)?;
        let email = claims.email.unwrap_or_default();
        if self.service_account.is_empty() || !email.eq_ignore_ascii_case(&self.service_account) {
            return Err(TokenRejected::new(
                RejectReason::ServiceAccount,
                format!("the push token was issued to `{email}`, not the push service account"),
            ));
        }
        let verified = match claims.email_verified {
            Some(Value::Bool(flag)) => flag,
            Some(Value::String(text)) => text.eq_ignore_ascii_case("true"),
            _ => false,
        };
        if !verified {
            return Err(TokenRejected::new(
                RejectReason::EmailNotVerified,
                "the push token's e-mail address is not verified",
            ));
        }
        Ok(PushIdentity {
            email,
            subject: claims.sub.unwrap_or_default(),
        })
    }
}
