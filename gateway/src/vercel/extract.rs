//! The preamble every Vercel call shares, as axum extractors, so a handler
//! states what it needs in its signature:
//!
//! - [`Verified`]: the caller's Vercel token, verified ([`authenticate`]);
//! - [`Partner<R>`]: a partner API call on the installation in the path: the
//!   caller, allowed by the rule `R` ([`Read`], [`UserChange`], [`Change`])
//!   on that installation (which must be the token's), and for changes the
//!   `Idempotency-Key`, together as the [`Call`] operations take;
//! - [`Installed<R>`]: the same, with the installation's account (404 when
//!   unknown or uninstalled);
//! - [`Flow<R>`] and [`FlowInstalled<R>`]: the same for the simplified flow,
//!   whose installation is the token's.
//!
//! [`Verified`], [`Partner`] and [`Flow`] take the body too, as their second
//! parameter: [`Payload<T>`] (a JSON object, read leniently with
//! [`parse_json`]), [`OptionalPayload<T>`] (the same, or empty) or [`Bytes`]
//! (the raw body, for the handler to read). The steps then run in the order
//! the contract answers them: the path, the body read whole (a body over the
//! limit is a 413 before anything else), the token, the access rule, the key,
//! and only then the body's fields. A refusal is answered with the error body
//! of the route's contract: the partner API's by default, the flow's with
//! [`FlowFailure`].

use super::auth::{Access, Caller, authenticate};
use super::body::{parse_json, parse_optional_json};
use super::error::{FlowFailure, VercelError};
use super::operations::{Call, installed_account, installed_account_for_read};
use crate::context::idempotency_key;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use marketbridge_core::{Error, Result};
use marketbridge_proto::account::v1 as account_pb;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::marker::PhantomData;

/// What a route lets a caller do, as a type.
pub trait AccessRule: Send + Sync + 'static {
    /// The rule.
    const ACCESS: Access;
    /// Whether the call changes something, and so carries an
    /// `Idempotency-Key`.
    const CHANGES: bool;
}

/// Reads: users of any role, and Vercel.
#[derive(Debug, Clone, Copy)]
pub struct Read;

/// Changes by an ADMIN user only.
#[derive(Debug, Clone, Copy)]
pub struct UserChange;

/// Changes by an ADMIN user or by Vercel itself.
#[derive(Debug, Clone, Copy)]
pub struct Change;

impl AccessRule for Read {
    const ACCESS: Access = Access::Read;
    const CHANGES: bool = false;
}

impl AccessRule for UserChange {
    const ACCESS: Access = Access::UserChange;
    const CHANGES: bool = true;
}

impl AccessRule for Change {
    const ACCESS: Access = Access::Change;
    const CHANGES: bool = true;
}

/// A JSON object body, read leniently (a 400 naming the field as written
/// when it does not fit `T`).
#[derive(Debug, Clone)]
pub struct Payload<T>(pub T);

/// A JSON object body that may be empty (then `T::default()`).
#[derive(Debug, Clone)]
pub struct OptionalPayload<T>(pub T);

/// A body as a route reads it, once the call is allowed.
pub trait BodyShape: Sized + Send {
    /// The body of `bytes`, or why it cannot be read.
    fn read(bytes: Bytes) -> Result<Self>;
}

impl BodyShape for Bytes {
    fn read(bytes: Bytes) -> Result<Self> {
        Ok(bytes)
    }
}

impl<T: DeserializeOwned + Send> BodyShape for Payload<T> {
    fn read(bytes: Bytes) -> Result<Self> {
        parse_json(&bytes).map(Self)
    }
}

impl<T: DeserializeOwned + Default + Send> BodyShape for OptionalPayload<T> {
    fn read(bytes: Bytes) -> Result<Self> {
        parse_optional_json(&bytes).map(Self)
    }
}

/// The request's parts and its whole body, read within the gateway's body
/// limit (axum's own answer when it cannot be).
async fn whole_body(request: Request, state: &AppState) -> Result<(Parts, Bytes), Response> {
    let (parts, body) = request.into_parts();
    let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok((parts, bytes))
}

/// The `installation_id` of the path; axum's own answer when the path
/// cannot be read.
async fn path_installation(parts: &mut Parts, state: &AppState) -> Result<String, Response> {
    let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
        .await
        .map_err(IntoResponse::into_response)?;
    params.get("installation_id").cloned().ok_or_else(|| {
        VercelError(Error::internal("the route names no installation")).into_response()
    })
}

/// The caller allowed `R` on `installation_id`, and the call it makes.
fn allowed<R: AccessRule>(caller: &Caller, parts: &Parts, installation_id: String) -> Result<Call> {
    caller.allow_installation(&installation_id, R::ACCESS)?;
    let key = if R::CHANGES {
        idempotency_key(&parts.headers)?
    } else {
        None
    };
    Ok(Call {
        installation_id,
        key,
        actor: caller.actor(),
    })
}

/// The verified caller, allowed by no installation yet, and the body `B`
/// (`()`: none). `E` is the error body refusals are answered with.
#[derive(Debug, Clone)]
pub struct Verified<E = VercelError, B = ()> {
    /// The verified caller.
    pub caller: Caller,
    /// The body.
    pub body: B,
    failure: PhantomData<fn() -> E>,
}

impl<E> FromRequestParts<AppState> for Verified<E>
where
    E: From<Error> + IntoResponse,
{
    type Rejection = E;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, E> {
        let caller = authenticate(&state.vercel, &parts.headers).await?;
        Ok(Self {
            caller,
            body: (),
            failure: PhantomData,
        })
    }
}

impl<E, B> FromRequest<AppState> for Verified<E, B>
where
    E: From<Error> + IntoResponse,
    B: BodyShape,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (parts, bytes) = whole_body(request, state).await?;
        let refused = |error: Error| E::from(error).into_response();
        let caller = authenticate(&state.vercel, &parts.headers)
            .await
            .map_err(refused)?;
        let body = B::read(bytes).map_err(refused)?;
        Ok(Self {
            caller,
            body,
            failure: PhantomData,
        })
    }
}

/// A partner API call on the installation in the path (`installation_id`),
/// allowed by `R`, with the body `B` (`()`: none).
#[derive(Debug, Clone)]
pub struct Partner<R, B = ()> {
    /// The verified caller.
    pub caller: Caller,
    /// The installation, the key and the person acting.
    pub call: Call,
    /// The body.
    pub body: B,
    rule: PhantomData<fn() -> R>,
}

impl<R: AccessRule, B> Partner<R, B> {
    /// The installation in the path.
    pub fn installation_id(&self) -> &str {
        &self.call.installation_id
    }

    /// The installation's account, or 404 when it is unknown or
    /// uninstalled (recently read for a read; always fresh for a change).
    pub async fn installed_account(&self, state: &AppState) -> Result<account_pb::Account> {
        account_for::<R>(state, &self.call.installation_id).await
    }
}

/// The installation's account as a call under `R` needs it: a read may use
/// one read recently ([`super::cache`]); a change reads it fresh.
async fn account_for<R: AccessRule>(
    state: &AppState,
    installation_id: &str,
) -> Result<account_pb::Account> {
    if R::CHANGES {
        installed_account(state, installation_id).await
    } else {
        installed_account_for_read(state, installation_id).await
    }
}

/// The caller and the call of a partner API request whose path was read.
async fn partner_call<R: AccessRule>(
    parts: &Parts,
    state: &AppState,
    installation_id: String,
) -> Result<(Caller, Call)> {
    let caller = authenticate(&state.vercel, &parts.headers).await?;
    let call = allowed::<R>(&caller, parts, installation_id)?;
    Ok((caller, call))
}

impl<R: AccessRule> FromRequestParts<AppState> for Partner<R> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let installation_id = path_installation(parts, state).await?;
        let (caller, call) = partner_call::<R>(parts, state, installation_id)
            .await
            .map_err(|error| VercelError(error).into_response())?;
        Ok(Self {
            caller,
            call,
            body: (),
            rule: PhantomData,
        })
    }
}

impl<R: AccessRule, B: BodyShape> FromRequest<AppState> for Partner<R, B> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let installation_id = path_installation(&mut parts, state).await?;
        let (parts, bytes) = whole_body(Request::from_parts(parts, body), state).await?;
        let refused = |error: Error| VercelError(error).into_response();
        let (caller, call) = partner_call::<R>(&parts, state, installation_id)
            .await
            .map_err(refused)?;
        let body = B::read(bytes).map_err(refused)?;
        Ok(Self {
            caller,
            call,
            body,
            rule: PhantomData,
        })
    }
}

/// A partner API call on an installed installation (the path's), allowed by
/// `R`, with its account.
#[derive(Debug, Clone)]
pub struct Installed<R> {
    /// The verified caller.
    pub caller: Caller,
    /// The installation, the key and the person acting.
    pub call: Call,
    /// The installation's account.
    pub account: account_pb::Account,
    rule: PhantomData<fn() -> R>,
}

impl<R: AccessRule> FromRequestParts<AppState> for Installed<R> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Partner { caller, call, .. } = Partner::<R>::from_request_parts(parts, state).await?;
        let account = account_for::<R>(state, &call.installation_id)
            .await
            .map_err(|error| VercelError(error).into_response())?;
        Ok(Self {
            caller,
            call,
            account,
            rule: PhantomData,
        })
    }
}

/// A call of the simplified flow, on the token's installation, allowed by
/// `R`, with the body `B` (`()`: none); refusals have the flow's error body.
#[derive(Debug, Clone)]
pub struct Flow<R, B = ()> {
    /// The verified caller.
    pub caller: Caller,
    /// The installation, the key and the person acting.
    pub call: Call,
    /// The body.
    pub body: B,
    rule: PhantomData<fn() -> R>,
}

impl<R: AccessRule, B> Flow<R, B> {
    /// The token's installation.
    pub fn installation_id(&self) -> &str {
        &self.call.installation_id
    }

    /// The installation's account, or 404 when it is unknown or
    /// uninstalled (recently read for a read; always fresh for a change).
    pub async fn installed_account(&self, state: &AppState) -> Result<account_pb::Account> {
        account_for::<R>(state, &self.call.installation_id).await
    }
}

/// The caller and the call of a request of the flow.
async fn flow_call<R: AccessRule>(parts: &Parts, state: &AppState) -> Result<(Caller, Call)> {
    let caller = authenticate(&state.vercel, &parts.headers).await?;
    let installation_id = caller.installation_id()?.to_owned();
    let call = allowed::<R>(&caller, parts, installation_id)?;
    Ok((caller, call))
}

impl<R: AccessRule> FromRequestParts<AppState> for Flow<R> {
    type Rejection = FlowFailure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, FlowFailure> {
        let (caller, call) = flow_call::<R>(parts, state).await?;
        Ok(Self {
            caller,
            call,
            body: (),
            rule: PhantomData,
        })
    }
}

impl<R: AccessRule, B: BodyShape> FromRequest<AppState> for Flow<R, B> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (parts, bytes) = whole_body(request, state).await?;
        let refused = |error: Error| FlowFailure(error).into_response();
        let (caller, call) = flow_call::<R>(&parts, state).await.map_err(refused)?;
        let body = B::read(bytes).map_err(refused)?;
        Ok(Self {
            caller,
            call,
            body,
            rule: PhantomData,
        })
    }
}

/// A call of the simplified flow on an installed installation (the
/// token's), allowed by `R`, with its account.
#[derive(Debug, Clone)]
pub struct FlowInstalled<R> {
    /// The verified caller.
    pub caller: Caller,
    /// The installation, the key and the person acting.
    pub call: Call,
    /// The installation's account.
    pub account: account_pb::Account,
    rule: PhantomData<fn() -> R>,
}

impl<R: AccessRule> FromRequestParts<AppState> for FlowInstalled<R> {
    type Rejection = FlowFailure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, FlowFailure> {
        let (caller, call) = flow_call::<R>(parts, state).await?;
        let account = account_for::<R>(state, &call.installation_id).await?;
        Ok(Self {
            caller,
            call,
            account,
            rule: PhantomData,
        })
    }
}
