//! The OIDC tokens Vercel signs for partner API calls and SSO, and the
//! deliberately broken ones tests use to prove they are refused; and the
//! installation credentials marketbridge calls Vercel with: short-lived
//! tokens from the client-credentials grant, revocation, and `410 Gone`.

use super::Shared;
use super::access::authorize;
use super::refusal::{Refusal, gone, refusal};
use crate::common::SigningKey;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

type Answer = Result<Response, Refusal>;

/// A Vercel user acting in the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimUser {
    /// User id (hex).
    pub id: String,
    /// `ADMIN` or `USER`.
    pub role: String,
    /// E-mail address (`user_email`); empty leaves the claim out.
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
        if !user.email.is_empty() {
            claims.insert("user_email".into(), json!(user.email));
        }
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

/// The routes of the token grant and credential revocation.
pub(crate) fn credential_routes() -> Router<Arc<Shared>> {
    Router::new().route(GRANT_PATH, post(grant)).route(
        "/v1/installations/{id}/credentials/revoke",
        post(revoke_credentials),
    )
}

/// Where the simulator answers the client-credentials grant (marketbridge's
/// default `vercel.token_endpoint`).
pub const GRANT_PATH: &str = "/login/oauth/token";

/// Field names the simulator accepts for the credential to revoke (the real
/// names are UNVERIFIED).
const REVOKED_FIELDS: [&str; 4] = ["token", "access_token", "credential", "revoke_token"];

fn form_or_json(headers: &HeaderMap, body: &Bytes) -> Option<BTreeMap<String, String>> {
    let json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if json {
        let value: Value = serde_json::from_slice(body).ok()?;
        let object = value.as_object()?;
        Some(
            object
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect(),
        )
    } else {
        let text = std::str::from_utf8(body).ok()?;
        let url = reqwest::Url::parse(&format!("http://form/?{text}")).ok()?;
        Some(url.query_pairs().into_owned().collect())
    }
}

/// `POST /login/oauth/token` with `grant_type=client_credentials`, the
/// client id and secret and `installation_id`: a short-lived token.
async fn grant(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Answer {
    let Some(fields) = form_or_json(&headers, &body) else {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the body is neither a form nor JSON",
        ));
    };
    let field = |name: &str| fields.get(name).cloned().unwrap_or_default();
    if field("grant_type") != "client_credentials" {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be client_credentials",
        ));
    }
    if field("client_id") != shared.client_id || field("client_secret") != shared.client_secret {
        return Err(refusal(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "wrong client credentials",
        ));
    }
    let id = field("installation_id");
    let mut world = shared.world();
    if world.credentials.gone.contains(&id) {
        return Err(gone());
    }
    match world.installations.get(&id) {
        Some(installation) if !installation.finalized => {}
        Some(_) => return Err(gone()),
        None => {
            return Err(refusal(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such installation",
            ));
        }
    }
    let lifetime = world.credentials.lifetime_seconds.unwrap_or(3600);
    let token = format!("vst_{}", super::alnum_id(40));
    let expires_at = chrono::Utc::now() + chrono::Duration::seconds(lifetime);
    world
        .credentials
        .short_lived
        .insert(token.clone(), (id.clone(), expires_at));
    *world.credentials.grants.entry(id).or_default() += 1;
    Ok((
        StatusCode::OK,
        axum::Json(json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": "read-write:integration-resource",
        })),
    )
        .into_response())
}

/// `POST /v1/installations/{id}/credentials/revoke`: authenticated with a
/// live credential, retires the one named in the body; refuses the last
/// live one with 409.
async fn revoke_credentials(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    authorize(&shared, &headers, &id)?;
    let body: Value = serde_json::from_slice(&body).map_err(|_| {
        refusal(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the body is not JSON",
        )
    })?;
    if body.get("client_secret").and_then(Value::as_str) != Some(shared.client_secret.as_str()) {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "forbidden",
            "wrong client secret",
        ));
    }
    let Some(retired) = REVOKED_FIELDS
        .iter()
        .find_map(|f| body.get(*f).and_then(Value::as_str))
        .map(str::to_owned)
    else {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "name the credential to revoke",
        ));
    };
    let mut world = shared.world();
    let Some(installation) = world.installations.get(&id) else {
        return Err(refusal(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such installation",
        ));
    };
    let live: Vec<String> = std::iter::once(installation.token.clone())
        .chain(installation.rotated_tokens.iter().cloned())
        .filter(|t| !world.credentials.revoked.contains(t))
        .collect();
    if !live.contains(&retired) {
        return Err(refusal(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such live credential",
        ));
    }
    if live.len() == 1 {
        return Err(refusal(
            StatusCode::CONFLICT,
            "conflict",
            "the installation's last live credential cannot be revoked",
        ));
    }
    world.credentials.revoked.insert(retired);
    Ok(StatusCode::NO_CONTENT.into_response())
}
