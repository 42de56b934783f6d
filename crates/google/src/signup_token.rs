//! The signup token (`x-gcp-marketplace-token`) Google POSTs to the
//! provider's signup URL: an RS256 JWT from the pinned issuer whose `sub` is
//! the procurement account id. Checked: signature with the issuer's published
//! keys, `iss` exactly the pinned URL, our `aud`, `exp` with a small skew, and
//! a non-empty `sub` (an empty one would sign up nobody and approve anyway).

use crate::jwks::KeySet;
use crate::token::{
    RejectReason, TokenRejected, audience_matches, audience_text, check_lifetime, verified_claims,
};
use chrono::{DateTime, TimeZone, Utc};
use marketbridge_core::time::SharedClock;
use serde::Deserialize;
use serde_json::Value;

/// The form field Google posts the token in.
pub const SIGNUP_TOKEN_FIELD: &str = "x-gcp-marketplace-token";

#[derive(Debug, Clone, Deserialize)]
struct RawClaims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<Value>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    google: Option<Value>,
}

/// What a verified signup token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignupClaims {
    /// The procurement account id.
    pub account_id: String,
    /// Obfuscated id of the person signing up, when given.
    pub user_identity: Option<String>,
    /// The person's roles, when given.
    pub roles: Vec<String>,
    /// Order ids, when the product allows several orders.
    pub orders: Vec<String>,
    /// When the token expires.
    pub expires_at: DateTime<Utc>,
}

/// Verifies signup tokens.
#[derive(Debug)]
pub struct SignupTokenVerifier {
    keys: KeySet,
    issuer: String,
    audience: String,
    clock: SharedClock,
}

impl SignupTokenVerifier {
    /// A verifier of tokens signed by `keys`, issued by exactly `issuer`, for
    /// `audience`.
    pub fn new(keys: KeySet, issuer: &str, audience: &str, clock: SharedClock) -> Self {
        Self {
            keys,
            issuer: issuer.trim().to_owned(),
            audience: audience.trim().to_owned(),
            clock,
        }
    }

    /// Verifies a signup token.
    pub async fn verify(&self, token: &str) -> Result<SignupClaims, TokenRejected> {
        let claims: RawClaims = verified_claims(&self.keys, token, "signup token").await?;
        let issuer = claims.iss.unwrap_or_default();
        if self.issuer.is_empty() || issuer != self.issuer {
            return Err(TokenRejected::new(
                RejectReason::Issuer,
                format!("the signup token's issuer `{issuer}` is not the pinned issuer"),
            ));
        }
        if self.audience.is_empty() || !audience_matches(claims.aud.as_ref(), &self.audience) {
            return Err(TokenRejected::new(
                RejectReason::Audience,
                format!(
                    "the signup token is for audience `{}`, not this product",
                    audience_text(claims.aud.as_ref())
                ),
            ));
        }
        check_lifetime("signup token", self.clock.now(), claims.iat, claims.exp)?;
        let account_id = claims
            .sub
            .as_deref()
            .map(str::trim)
            .filter(|sub| !sub.is_empty())
            .ok_or_else(|| {
                TokenRejected::new(
                    RejectReason::Subject,
                    "the signup token names no account (empty sub)",
                )
            })?
            .to_owned();
        if account_id.len() > 255 || account_id.contains(['/', '?', '#']) {
            return Err(TokenRejected::new(
                RejectReason::Subject,
                "the signup token's account id is not a valid id",
            ));
        }
        let google = claims.google.unwrap_or(Value::Null);
        let user_identity = google
            .get("user_identity")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .filter(|id| !id.is_empty());
        let roles = google
            .get("roles")
            .and_then(Value::as_array)
            .map(|roles| {
                roles
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let orders = orders_of(&google);
        let expires_at = claims
            .exp
            .and_then(|exp| Utc.timestamp_opt(exp, 0).single())
            .unwrap_or_else(|| self.clock.now());
        Ok(SignupClaims {
            account_id,
            user_identity,
            roles,
            orders,
            expires_at,
        })
    }
}

/// Order ids from the `google.orders` claim: an array of strings or of
/// objects with an `orderId`.
fn orders_of(google: &Value) -> Vec<String> {
    let Some(orders) = google.get("orders").and_then(Value::as_array) else {
        return Vec::new();
    };
    orders
        .iter()
        .filter_map(|order| match order {
            Value::String(id) => Some(id.clone()),
            Value::Object(fields) => fields
                .get("orderId")
                .or_else(|| fields.get("order_id"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            _ => None,
        })
        .filter(|id| !id.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn orders_are_read_in_both_shapes() {
        assert_eq!(
            orders_of(&json!({"orders": ["o-1", {"orderId": "o-2"}, 3, ""]})),
            ["o-1", "o-2"]
        );
        assert!(orders_of(&json!({})).is_empty());
    }
}
