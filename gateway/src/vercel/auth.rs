//! Who is calling: every partner API call carries a Vercel OIDC token. The
//! token is verified, its kind (user or system) decided, and the call
//! checked against the route's rules: the installation in the path must be
//! the token's, and changes need a user with the ADMIN role (or Vercel
//! itself, where the contract lets system tokens change things).

use super::state::VercelState;
use axum::http::HeaderMap;
use marketbridge_core::{Error, Result};
use marketbridge_proto::common::v1::Person;
use marketbridge_vercel::oidc::{AuthKind, Claims, TokenUse, now_epoch_seconds};

/// Header naming the auth style.
pub const AUTH_STYLE_HEADER: &str = "x-vercel-auth";

/// What a route lets a caller do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads: users of any role, and Vercel.
    Read,
    /// Changes by an ADMIN user only.
    UserChange,
    /// Changes by an ADMIN user or by Vercel itself.
    Change,
}

/// A verified caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's claims.
    pub claims: Claims,
    /// User or system.
    pub kind: AuthKind,
}

fn bearer_token(headers: &HeaderMap) -> Result<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| Error::unauthenticated("an Authorization bearer token is required"))?
        .to_str()
        .map_err(|_| Error::unauthenticated("the Authorization header is not readable"))?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(|| {
        Error::unauthenticated("the Authorization header must be `Bearer <token>`")
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Error::unauthenticated(
            "the Authorization header must be `Bearer <token>`",
        ));
    }
    Ok(token.trim())
}

/// Verifies the call's token and decides its kind. A token naming a user
/// in any claim is a user token whatever `X-Vercel-Auth` says, so a user
/// (read-only, or with claims missing) cannot pass as Vercel. The token must
/// be an access token, within its time rules, with the subject of its kind.
pub async fn authenticate(state: &VercelState, headers: &HeaderMap) -> Result<Caller> {
    let token = bearer_token(headers)?;
    let claims = state.verifier.verify(token).await?;
    let declared = headers
        .get(AUTH_STYLE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(AuthKind::from_header);
    let kind = if claims.names_user() || declared == Some(AuthKind::User) {
        AuthKind::User
    } else {
        AuthKind::System
    };
    claims.check(
        kind,
        TokenUse::PartnerCall,
        now_epoch_seconds(),
        state.token_rules,
    )?;
    if kind == AuthKind::User
        && claims
            .user_email
            .as_deref()
            .is_none_or(|email| email.trim().is_empty())
    {
        // Vercel includes it on every user token (contract §3.1) but the
        // schema keeps it optional: note it, do not refuse the call.
        tracing::warn!(
            installation.id = claims.installation_id.as_deref().unwrap_or_default(),
            "a Vercel user token carries no user_email"
        );
    }
    Ok(Caller { claims, kind })
}

impl Caller {
    /// The person acting, for the audit trail (`None` for Vercel itself).
    pub fn actor(&self) -> Option<Person> {
        if self.kind != AuthKind::User {
            return None;
        }
        Some(Person {
            external_id: self.claims.user_id.clone().unwrap_or_default(),
            email: self.claims.user_email.clone().unwrap_or_default(),
            name: self.claims.user_name.clone().unwrap_or_default(),
            role: self.claims.user_role.clone().unwrap_or_default(),
            last_seen_at: None,
        })
    }

    /// The installation the token is for.
    pub fn installation_id(&self) -> Result<&str> {
        self.claims
            .installation_id
            .as_deref()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| Error::permission_denied("the token is not for an installation"))
    }

    /// Checks what the caller may do, without an installation in the path.
    pub fn allow(&self, access: Access) -> Result<()> {
        match (access, self.kind) {
            (Access::Read, _) => Ok(()),
            (Access::UserChange | Access::Change, AuthKind::User) => {
                if self.claims.is_admin() {
                    Ok(())
                } else {
                    Err(Error::permission_denied(
                        "only team members with the ADMIN role may change this",
                    )
                    .with_user_message("You need the Owner or Member role to do this"))
                }
            }
            (Access::Change, AuthKind::System) => Ok(()),
            (Access::UserChange, AuthKind::System) => Err(Error::permission_denied(
                "this call needs user authentication",
            )),
        }
    }

    /// Checks the caller may act on `installation_id` (from the path) as
    /// `access` says.
    pub fn allow_installation(&self, installation_id: &str, access: Access) -> Result<()> {
        let own = self.installation_id()?;
        if own != installation_id {
            return Err(Error::permission_denied(
                "the token is for another installation",
            ));
        }
        self.allow(access)
    }
}
