//! Who may call the fake Vercel API: the bearer token must be a live
//! credential of the installation in the path, as Vercel checks it.

use super::Shared;
use super::refusal::{Refusal, refusal};
use axum::http::{HeaderMap, StatusCode};

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// Checks the bearer token belongs to installation `id`, like Vercel does.
pub(crate) fn authorize(shared: &Shared, headers: &HeaderMap, id: &str) -> Result<(), Refusal> {
    let Some(token) = bearer(headers) else {
        return Err(refusal(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing bearer token",
        ));
    };
    let world = shared.world();
    if let Some(checked) = world.credentials.check(id, &token) {
        return checked;
    }
    match world.installations.get(id) {
        Some(installation) if installation.accepts(&token) => Ok(()),
        Some(installation) if installation.finalized => Err(refusal(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the installation is finalized; its token no longer works",
        )),
        _ if world
            .installations
            .values()
            .any(|other| other.accepts(&token)) =>
        {
            Err(refusal(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the token belongs to another installation",
            ))
        }
        _ => Err(refusal(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid token",
        )),
    }
}
