//! The OIDC tokens Vercel signs for partner API calls and SSO, and the
//! deliberately broken ones tests use to prove they are refused.

use crate::common::SigningKey;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};

/// A Vercel user acting in the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimUser {
    /// User id (hex).
    pub id: String,
    /// `ADMIN` or `USER`.
    pub role: String,
    /// E-mail address.
    pub email: String,
    /// Display name.
    pub name: String,
}

impl SimUser {
    /// A user with a fresh id and the given role.
    pub fn new(role: &str) -> Self {
        let id = super::hex_id(16);
        Self {
            email: format!("user-{}@example.com", &id[..6]),
            name: format!("User {}", &id[..6]),
            id,
            role: role.to_owned(),
        }
    }

    /// A team admin.
    pub fn admin() -> Self {
        Self::new("ADMIN")
    }

    /// A read-only member (Vercel's billing or viewer roles).
    pub fn viewer() -> Self {
        Self::new("USER")
    }
}

/// What is wrong with a token, on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFlaw {
    /// Expired a minute ago (beyond any leeway).
    Expired,
    /// Issued by someone else.
    WrongIssuer,
    /// Meant for another integration.
    WrongAudience,
    /// Signed by a key the JWKS does not publish, under an unknown `kid`.
    UnknownKey,
    /// Signed by another key under the published `kid`.
    ForgedKey,
    /// `alg: none`, no signature.
    AlgNone,
    /// HS256 keyed with the client secret.
    Hs256,
    /// `nbf` ten minutes ahead (beyond any leeway).
    NotYetValid,
    /// `iat` a year ahead (and `exp` an hour after it).
    IssuedInFuture,
    /// Valid for ten years.
    LongLived,
    /// `type: "id_token"`: the SSO identity, not a bearer.
    IdToken,
    /// `type: "access_token"`: a bearer, not an SSO identity.
    AccessToken,
    /// A `sub` of neither the user nor the system form (`account:xyz`).
    MalformedSubject,
    /// A user token without `user_role`.
    NoUserRole,
}

/// How a token is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signing {
    Published,
    UnknownKey,
    ForgedKey,
    AlgNone,
    Hs256,
}

/// Everything that goes into one token.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// `installation_id` claim (null when `None`).
    pub installation_id: Option<String>,
    /// `account_id` claim (absent when `None`).
    pub account_id: Option<String>,
    /// The user, for user tokens; `None` for system tokens.
    pub user: Option<SimUser>,
    /// `type` claim.
    pub token_type: String,
    /// Seconds until expiry (negative: already expired).
    pub expires_in: i64,
    /// Issuer; `None` for the simulator's.
    pub issuer: Option<String>,
    /// Audience; `None` for the configured client id.
    pub audience: Option<String>,
    /// Seconds from now to `nbf`; absent when `None`.
    pub not_before_in: Option<i64>,
    /// Seconds from now to `iat` (0: now); `exp` counts from `iat`.
    pub issued_in: i64,
    /// `sub`; `None` for the form of the token's kind.
    pub subject: Option<String>,
    /// Leaves `user_role` out of a user token.
    pub omit_user_role: bool,
    pub(crate) signing: Signing,
}

impl TokenSpec {
    /// A user token for an installation of `account_id`.
    pub fn user(installation_id: &str, account_id: &str, user: SimUser) -> Self {
        Self {
            installation_id: Some(installation_id.to_owned()),
            account_id: Some(account_id.to_owned()),
            user: Some(user),
            token_type: "access_token".to_owned(),
            expires_in: 3600,
            issuer: None,
            audience: None,
            not_before_in: None,
            issued_in: 0,
            subject: None,
            omit_user_role: false,
            signing: Signing::Published,
        }
    }

    /// A system token; without an installation it is the kind Vercel sends
    /// before anything is installed.
    pub fn system(installation_id: Option<&str>, account_id: Option<&str>) -> Self {
        Self {
            installation_id: installation_id.map(str::to_owned),
            account_id: account_id.map(str::to_owned),
            user: None,
            token_type: "access_token".to_owned(),
            expires_in: 3600,
            issuer: None,
            audience: None,
            not_before_in: None,
            issued_in: 0,
            subject: None,
            omit_user_role: false,
            signing: Signing::Published,
        }
    }

    /// Breaks the token in one way.
    pub fn with_flaw(mut self, flaw: TokenFlaw) -> Self {
        match flaw {
            TokenFlaw::Expired => self.expires_in = -60,
            TokenFlaw::WrongIssuer => self.issuer = Some("https://issuer.example.com".into()),
            TokenFlaw::WrongAudience => self.audience = Some("oac_someoneelse000000000000".into()),
            TokenFlaw::UnknownKey => self.signing = Signing::UnknownKey,
            TokenFlaw::ForgedKey => self.signing = Signing::ForgedKey,
            TokenFlaw::AlgNone => self.signing = Signing::AlgNone,
            TokenFlaw::Hs256 => self.signing = Signing::Hs256,
            TokenFlaw::NotYetValid => self.not_before_in = Some(600),
            TokenFlaw::IssuedInFuture => self.issued_in = 365 * 24 * 3600,
            TokenFlaw::LongLived => self.expires_in = 10 * 365 * 24 * 3600,
            TokenFlaw::IdToken => self.token_type = "id_token".to_owned(),
            TokenFlaw::AccessToken => self.token_type = "access_token".to_owned(),
            TokenFlaw::MalformedSubject => self.subject = Some("account:xyz".to_owned()),
            TokenFlaw::NoUserRole => self.omit_user_role = true,
        }
        self
    }
}

/// The claims of a spec, as Vercel writes them.
pub(crate) fn claims(spec: &TokenSpec, issuer: &str, audience: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut claims = Map::new();
    claims.insert(
        "iss".into(),
        json!(spec.issuer.clone().unwrap_or_else(|| issuer.to_owned())),
    );
    claims.insert(
        "aud".into(),
        json!(spec.audience.clone().unwrap_or_else(|| audience.to_owned())),
    );
    let account_hex = spec
        .account_id
        .as_deref()
        .map(super::hex_of)
        .unwrap_or_else(|| "0".to_owned());
    let sub = match (&spec.subject, &spec.user) {
        (Some(subject), _) => subject.clone(),
        (None, Some(user)) => format!("account:{account_hex}:user:{}", user.id),
        (None, None) => format!("account:{account_hex}"),
    };
    claims.insert("sub".into(), json!(sub));
    if let Some(account_id) = &spec.account_id {
        claims.insert("account_id".into(), json!(account_id));
    }
    claims.insert("installation_id".into(), json!(spec.installation_id));
    if let Some(user) = &spec.user {
        claims.insert("user_id".into(), json!(user.id));
        if !spec.omit_user_role {
            claims.insert("user_role".into(), json!(user.role));
        }
        claims.insert("user_email".into(), json!(user.email));
        claims.insert("user_name".into(), json!(user.name));
    }
    claims.insert("type".into(), json!(spec.token_type));
    let issued_at = now + spec.issued_in;
    claims.insert("iat".into(), json!(issued_at));
    claims.insert("exp".into(), json!(issued_at + spec.expires_in));
    if let Some(not_before_in) = spec.not_before_in {
        claims.insert("nbf".into(), json!(now + not_before_in));
    }
    Value::Object(claims)
}

/// Signs claims the way `signing` says.
pub(crate) fn sign(
    signing: Signing,
    claims: &Value,
    published: &SigningKey,
    unpublished: &SigningKey,
    forged: &SigningKey,
    client_secret: &str,
) -> String {
    match signing {
        Signing::Published => published.sign(claims),
        Signing::UnknownKey => unpublished.sign(claims),
        Signing::ForgedKey => forged.sign(claims),
        Signing::AlgNone => {
            let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
            let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
            format!("{header}.{payload}.")
        }
        Signing::Hs256 => {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(published.kid().to_owned());
            jsonwebtoken::encode(
                &header,
                claims,
                &EncodingKey::from_secret(client_secret.as_bytes()),
            )
            .expect("HS256 signing")
        }
    }
}
