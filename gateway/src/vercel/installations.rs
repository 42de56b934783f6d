//! `/v1/installations/{installationId}`: install (upsert), read, change the
//! installation-level plan, uninstall.

use super::error::Answer;
use super::extract::{Change, Installed, OptionalPayload, Partner, Payload, Read, UserChange};
use super::operations::{
    Install, find_account, install, installation_billing_plan, installation_plan,
    set_installation_plan, uninstall,
};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use marketbridge_core::{Error, Result};
use marketbridge_vercel::model::partner::{
    DeleteInstallation, DeletedInstallation, Installation, UpdateInstallation, UpsertInstallation,
};

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
    partner: Partner<UserChange, Payload<UpsertInstallation>>,
) -> Answer {
    let Payload(body) = &partner.body;
    if body.credentials.access_token.trim().is_empty() {
        return Err(Error::invalid_field("credentials.access_token", "is required").into());
    }
    install(
        &state,
        &partner.call,
        Install {
            team_id: partner.caller.claims.account_id.clone(),
            accepted_policies: &body.accepted_policies,
            credentials: Some(&body.credentials),
            account: body.account.as_ref(),
            scopes: &body.scopes,
        },
    )
    .await?;
    tracing::info!(installation.id = %partner.installation_id(), "vercel installation upserted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn installation_view(state: &AppState, installation_id: &str) -> Result<Installation> {
    Ok(Installation {
        billing_plan: installation_billing_plan(state, installation_id).await?,
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
pub async fn get(State(state): State<AppState>, installed: Installed<Read>) -> Answer {
    let view = installation_view(&state, &installed.call.installation_id).await?;
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
    partner: Partner<UserChange, OptionalPayload<UpdateInstallation>>,
) -> Answer {
    let OptionalPayload(body) = &partner.body;
    let account = partner.installed_account(&state).await?;
    if let Some(plan_id) = body.billing_plan_id.as_deref() {
        let plan = installation_plan(&state, plan_id, &account.id, "billingPlanId").await?;
        set_installation_plan(&state, &partner.call, &account, &plan).await?;
    }
    let view = installation_view(&state, partner.installation_id()).await?;
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
    partner: Partner<Change, OptionalPayload<DeleteInstallation>>,
) -> Answer {
    let OptionalPayload(body) = &partner.body;
    let account = find_account(&state, partner.installation_id())
        .await?
        .ok_or_else(|| Error::not_found("installation not found"))?;
    let finalized = uninstall(
        &state,
        &partner.call,
        &account,
        body.cascade_resource_deletion.unwrap_or(false),
        body.reason.clone().unwrap_or_default(),
    )
    .await?;
    tracing::info!(installation.id = %partner.installation_id(), finalized, "vercel installation deleted");
    Ok(Json(DeletedInstallation { finalized }).into_response())
}
