//! `/v1/installations/{installationId}`: install (upsert), read, change the
//! installation-level plan, uninstall.

use super::auth::{Access, authenticate};
use super::body::{parse_json, parse_optional_json};
use super::convert;
use super::error::Answer;
use super::services::{
    Uninstall, find_account, installation_plan, installation_ref, installation_subscription,
    installed_account, plan, set_installation_plan, uninstall,
};
use crate::context::{idempotency_key, request_context};
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use marketbridge_core::Result;
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::common::v1::Person;
use marketbridge_vercel::model::partner::{
    DeleteInstallation, DeletedInstallation, Installation, InstallationAccount,
    InstallationCredentials, UpdateInstallation, UpsertInstallation,
};
use std::collections::BTreeMap;

/// Account attribute holding the Vercel team id.
pub const TEAM_ATTRIBUTE: &str = "vercel_team_id";

/// What an install says, whichever route it came through.
pub struct InstallRequest<'a> {
    /// The installation.
    pub installation_id: &'a str,
    /// The team, from the token.
    pub team_id: Option<String>,
    /// Accepted policies.
    pub accepted_policies: &'a BTreeMap<String, String>,
    /// The Vercel API credential.
    pub credentials: Option<&'a InstallationCredentials>,
    /// The team's details.
    pub account: Option<&'a InstallationAccount>,
    /// Granted scopes.
    pub scopes: &'a [String],
    /// The caller's idempotency key.
    pub key: Option<&'a str>,
    /// The installing user.
    pub actor: Option<Person>,
}

/// Creates or updates the installation's account, then starts the default
/// installation-level plan when one is configured and none is in force.
pub async fn install(state: &AppState, request: InstallRequest<'_>) -> Result<account_pb::Account> {
    let terms = convert::accepted_terms(request.accepted_policies, "acceptedPolicies")?;
    let account_details = request.account.cloned().unwrap_or_default();
    // The team's contact from the body; without one, the installing user
    // (their verified `user_email`, contract §3.1).
    let contact = account_details
        .contact
        .as_ref()
        .filter(|c| c.email.as_deref().is_some_and(|e| !e.trim().is_empty()))
        .map(|c| Person {
            email: c.email.clone().unwrap_or_default(),
            name: c.name.clone().unwrap_or_default(),
            ..Default::default()
        })
        .or_else(|| {
            request
                .actor
                .as_ref()
                .filter(|actor| !actor.email.trim().is_empty())
                .map(|actor| Person {
                    email: actor.email.clone(),
                    name: actor.name.clone(),
                    ..Default::default()
                })
        });
    let mut attributes = BTreeMap::new();
    if let Some(team_id) = &request.team_id {
        attributes.insert(TEAM_ATTRIBUTE.to_owned(), team_id.clone());
    }
    let mut accounts = state.clients.account.clone();
    let account = accounts
        .upsert_account(account_pb::UpsertAccountRequest {
            context: Some(request_context(
                request.installation_id,
                "vercel.install",
                request.key,
                request.actor.clone(),
            )),
            marketplace_ref: Some(installation_ref(request.installation_id)),
            display_name: account_details.name.clone().unwrap_or_default(),
            url: account_details.url.clone().unwrap_or_default(),
            contact,
            accepted_terms: terms,
            scopes: request.scopes.to_vec(),
            credential: request
                .credentials
                .map(|c| account_pb::MarketplaceCredential {
                    access_token: c.access_token.clone(),
                    token_type: c.token_type.clone().unwrap_or_else(|| "Bearer".to_owned()),
                    ..Default::default()
                }),
            signup_required: false,
            attributes,
            ..Default::default()
        })
        .await?
        .into_inner();
    start_default_plan(state, &account, &request).await?;
    Ok(account)
}

async fn start_default_plan(
    state: &AppState,
    account: &account_pb::Account,
    request: &InstallRequest<'_>,
) -> Result<()> {
    let configured = &state.vercel.default_installation_plan;
    if configured.is_empty()
        || installation_subscription(state, request.installation_id)
            .await?
            .is_some()
    {
        return Ok(());
    }
    let plan = installation_plan(
        state,
        configured,
        &account.id,
        "vercel.default_installation_plan",
    )
    .await
    .map_err(|error| {
        tracing::error!(plan = %configured, error = %error, "the default installation plan is not an installation plan of the catalog");
        marketbridge_core::Error::internal("the default installation plan is misconfigured")
    })?;
    set_installation_plan(
        state,
        account,
        request.installation_id,
        &plan,
        request.key,
        request.actor.clone(),
    )
    .await?;
    Ok(())
}

/// `PUT /v1/installations/{installationId}`: 204 once stored.
#[utoipa::path(
    operation_id = "installation_upsert",
    put,
    path = "/v1/installations/{installation_id}",
    tag = "vercel",
    params(("installation_id" = String, Path, description = "The Vercel installation (`icfg_...`); must be the token's"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for a retried call: 1 to 200 visible ASCII characters")),
    request_body(content = marketbridge_vercel::model::partner::UpsertInstallation, content_type = "application/json"),
    responses((status = 204, description = "The installation is stored"), crate::openapi::doc::VercelErrors),
    security(("vercel_oidc" = [], "vercel_auth_style" = []))
)]
pub async fn upsert(
    State(state): State<AppState>,
    Path(installation_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let caller = authenticate(&state.vercel, &headers).await?;
    caller.allow_installation(&installation_id, Access::UserChange)?;
    let key = idempotency_key(&headers)?;
    let body: UpsertInstallation = parse_json(&body)?;
    if body.credentials.access_token.trim().is_empty() {
        return Err(marketbridge_core::Error::invalid_field(
            "credentials.access_token",
            "is required",
        )
        .into());
    }
    install(
        &state,
        InstallRequest {
            installation_id: &installation_id,
            team_id: caller.claims.account_id.clone(),
            accepted_policies: &body.accepted_policies,
            credentials: Some(&body.credentials),
            account: body.account.as_ref(),
            scopes: &body.scopes,
            key: key.as_deref(),
            actor: caller.actor(),
        },
    )
    .await?;
    tracing::info!(installation.id = %installation_id, "vercel installation upserted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn installation_view(state: &AppState, installation_id: &str) -> Result<Installation> {
    let billing_plan = match installation_subscription(state, installation_id).await? {
        Some(subscription) => plan(state, &subscription.product_id, &subscription.plan_id).await?,
        None => None,
    };
    Ok(Installation {
        billing_plan,
        notification: None,
    })
}

/// `GET /v1/installations/{installationId}`: the installation-level plan.
#[utoipa::path(
    operation_id = "installation_get",
    get,
    path = "/v1/installations/{installation_id}",
    tag = "vercel",
    params(("installation_id" = String, Path, description = "The Vercel installation (`icfg_...`); must be the token's")),
    responses((status = 200, description = "The installation and its installation-level plan", body = marketbridge_vercel::model::partner::Installation), crate::openapi::doc::VercelErrors),
    security(("vercel_oidc" = [], "vercel_auth_style" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    Path(installation_id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let caller = authenticate(&state.vercel, &headers).await?;
    caller.allow_installation(&installation_id, Access::Read)?;
    installed_account(&state, &installation_id).await?;
    let view = installation_view(&state, &installation_id).await?;
    Ok(Json(view).into_response())
}

/// `PATCH /v1/installations/{installationId}`: switches the
/// installation-level plan; answers the installation.
#[utoipa::path(
    operation_id = "installation_update",
    patch,
    path = "/v1/installations/{installation_id}",
    tag = "vercel",
    params(("installation_id" = String, Path, description = "The Vercel installation (`icfg_...`); must be the token's"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for a retried call: 1 to 200 visible ASCII characters")),
    request_body(content = Option<marketbridge_vercel::model::partner::UpdateInstallation>, content_type = "application/json"),
    responses((status = 200, description = "The installation after the plan change", body = marketbridge_vercel::model::partner::Installation), crate::openapi::doc::VercelErrors),
    security(("vercel_oidc" = [], "vercel_auth_style" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    Path(installation_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let caller = authenticate(&state.vercel, &headers).await?;
    caller.allow_installation(&installation_id, Access::UserChange)?;
    let key = idempotency_key(&headers)?;
    let body: UpdateInstallation = parse_optional_json(&body)?;
    let account = installed_account(&state, &installation_id).await?;
    if let Some(plan_id) = body.billing_plan_id.as_deref() {
        let plan = installation_plan(&state, plan_id, &account.id, "billingPlanId").await?;
        set_installation_plan(
            &state,
            &account,
            &installation_id,
            &plan,
            key.as_deref(),
            caller.actor(),
        )
        .await?;
    }
    let view = installation_view(&state, &installation_id).await?;
    Ok(Json(view).into_response())
}

/// `DELETE /v1/installations/{installationId}`: uninstalls; answers
/// `{"finalized": bool}`.
#[utoipa::path(
    operation_id = "installation_delete",
    delete,
    path = "/v1/installations/{installation_id}",
    tag = "vercel",
    params(("installation_id" = String, Path, description = "The Vercel installation (`icfg_...`); must be the token's"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for a retried call: 1 to 200 visible ASCII characters")),
    request_body(content = Option<marketbridge_vercel::model::partner::DeleteInstallation>, content_type = "application/json"),
    responses((status = 200, description = "Uninstalled", body = marketbridge_vercel::model::partner::DeletedInstallation), crate::openapi::doc::VercelErrors),
    security(("vercel_oidc" = [], "vercel_auth_style" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    Path(installation_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let caller = authenticate(&state.vercel, &headers).await?;
    caller.allow_installation(&installation_id, Access::Change)?;
    let key = idempotency_key(&headers)?;
    let body: DeleteInstallation = parse_optional_json(&body)?;
    let account = find_account(&state, &installation_id)
        .await?
        .ok_or_else(|| marketbridge_core::Error::not_found("installation not found"))?;
    let finalized = uninstall(
        &state,
        &account,
        Uninstall {
            installation_id: &installation_id,
            cascade: body.cascade_resource_deletion.unwrap_or(false),
            reason: body.reason.unwrap_or_default(),
            key: key.as_deref(),
            actor: caller.actor(),
        },
    )
    .await?;
    tracing::info!(installation.id = %installation_id, finalized, "vercel installation deleted");
    Ok(Json(DeletedInstallation { finalized }).into_response())
}
