//! The request context passed with every mutating gRPC call: the
//! idempotency key (scoped so two callers cannot collide) and the person
//! acting.

use axum::http::HeaderMap;
use marketbridge_core::{Error, Result};
use marketbridge_proto::common::v1::{Person, RequestContext};

/// Header carrying the caller's idempotency key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The `Idempotency-Key` header, if present; a key that is not visible
/// ASCII or longer than 200 characters is a validation error.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 200 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            Error::invalid_field(
                "Idempotency-Key",
                "must be 1 to 200 visible ASCII characters",
            )
        })?;
    Ok(Some(key.to_owned()))
}

/// A context whose key is scoped by `scope` (an installation, an account)
/// and by the operation, so a key is only ever replayed for the same call.
pub fn request_context(
    scope: &str,
    operation: &str,
    key: Option<&str>,
    actor: Option<Person>,
) -> RequestContext {
    RequestContext {
        idempotency_key: key
            .map(|k| format!("{scope}:{operation}:{k}"))
            .unwrap_or_default(),
        actor,
    }
}
