//! `/v1/installations/{installationId}/resources...`: provisioning (with
//! the secrets), reading, updating (name, metadata, plan), deleting, the
//! deprecated listing, secret rotation, and the console (`repl`).

use super::auth::Access;
use super::body::{parse_optional_json, query_map};
use super::convert;
use super::error::{Answer, VercelError};
use super::extract::{
    Change, Installed, OptionalPayload, Partner, Payload, Read, UserChange, Verified,
};
use super::operations::{
    self, NewResource, ResourceChange, account_resources, installation_scoped_plan,
    installed_account, owned_resource, plan, run_command, set_installation_plan,
};
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use marketbridge_core::Result;
use marketbridge_core::ids::ResourceId;
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_vercel::model::partner::{
    ProvisionResource, ProvisionedResource, ReplRequest, Resource, ResourceList, RotateSecrets,
    RotatedSecrets, UpdateResource,
};
use serde_json::Value;
use std::collections::BTreeMap;

/// A resource with its plan, as Vercel shows it.
pub async fn resource_view(
    state: &AppState,
    resource: &provisioning_pb::Resource,
) -> Result<Resource> {
    let billing_plan = plan(state, &resource.product_id, &resource.plan_id).await?;
    Ok(convert::resource(resource, billing_plan))
}

/// `POST /v1/installations/{installationId}/resources`: provisions and
/// answers the resource with its secrets (pending when the product needs
/// time; Vercel hears when it is ready).
#[utoipa::path(
    operation_id = "resource_provision",
    post,
    path = "/v1/installations/{installation_id}/resources",
    tag = "vercel",
    params(("installation_id" = String, Path, description = "The Vercel installation (`icfg_...`); must be the token's"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for a retried call: 1 to 200 visible ASCII characters")),
    request_body(content = marketbridge_vercel::model::partner::ProvisionResource, content_type = "application/json"),
    responses((status = 200, description = "The resource and its secrets", body = marketbridge_vercel::model::partner::ProvisionedResource), crate::openapi::doc::VercelErrors),
    security(("vercel_oidc" = [], "vercel_auth_style" = []))
)]
pub async fn provision(
    State(state): State<AppState>,
    partner: Partner<UserChange, Payload<ProvisionResource>>,
) -> Answer {
    let Payload(body) = &partner.body;
    let account = partner.installed_account(&state).await?;
    // An installation-level plan puts the installation on it (as Update
    // Installation would) and the resource joins that plan instead of
    // getting its own subscription.
    let subscription_id = match installation_scoped_plan(
        &state,
        &body.product_id,
        &body.billing_plan_id,
        &account.id,
    )
    .await?
    {
        Some(installation_plan) => {
            let subscription =
                set_installation_plan(&state, &partner.call, &account, &installation_plan).await?;
            tracing::info!(installation.id = %partner.installation_id(), plan = %installation_plan.id, "installation plan set by a provision");
            subscription.id
        }
        None => String::new(),
    };
    let (resource, secrets) = operations::create_resource(
        &state,
        &partner.call,
        "vercel.provision",
        &account,
        NewResource {
            product_id: body.product_id.clone(),
            plan_id: body.billing_plan_id.clone(),
            name: body.name.clone(),
            metadata: convert::metadata(&Value::Object(body.metadata.clone()))?,
            external_id: body.external_id.clone().unwrap_or_default(),
            subscription_id,
            protocol_settings: convert::protocol_settings(body.protocol_settings.as_ref())?,
        },
    )
    .await?;
    tracing::info!(installation.id = %partner.installation_id(), resource.id = %resource.id, "vercel resource provisioned");
    let answer = ProvisionedResource {
        resource: resource_view(&state, &resource).await?,
        secrets: convert::secrets(&secrets),
    };
    Ok(Json(answer).into_response())
}

/// Whether an Update Resource body makes the resource production-only,
/// read from the field `vercel.allowed_environments_field` names (Vercel
/// documents none: UNVERIFIED). `None` when the setting is off, the field
/// is absent, or it is not an array of strings (ignored, not refused).
fn allowed_environments(state: &AppState, body: &[u8]) -> Option<bool> {
    let field = state.vercel.allowed_environments_field.as_str();
    if field.is_empty() {
        return None;
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    let environments = value.get(field)?.as_array()?;
    let environments: Vec<&str> = environments
        .iter()
        .map(Value::as_str)
        .collect::<Option<Vec<_>>>()?;
    Some(!environments.is_empty() && environments.iter().all(|e| *e == "production"))
}

/// `GET /v1/installations/{installationId}/resources/{resourceId}`; 404 once
/// uninstalled.
#[utoipa::path(
    operation_id = "resource_get",
    get,
    path = "/v1/installations/{installation_id}/resources/{resource_id}",
    tag = "vercel",
    params(("installation_id" = String, Path, description = "The Vercel installation (`icfg_...`); must be the token's"), ("resource_id" = String, Path, description = "Our resource id (`res_...`)")),
    responses((status = 200, description = "The resource", body = marketbridge_vercel::model::partner::Resource), crate::openapi::doc::VercelErrors),
    security(("vercel_oidc" = [], "vercel_auth_style" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    Path((_installation_id, resource_id)): Path<(String, String)>,
    installed: Installed<Read>,
) -> Answer {
    let resource = owned_resource(&state, &installed.account.id, &resource_id).await?;
    Ok(Json(resource_view(&state, &resource).await?).into_response())
}

/// `GET /v1/installations/{installationId}/resources` (deprecated by
/// Vercel), optionally `?ids=a,b`.
#[utoipa::path(
    operation_id = "resource_list",
    get,
    path = "/v1/installations/{installation_id}/resources",
    tag = "vercel",
    params(("installation_id" = String, Path, description = "The Vercel installation (`icfg_...`); must be the token's"), ("ids" = Option<String>, Query, description = "Comma-separated resource ids to keep")),
    responses((status = 200, description = "The installation's resources", body = marketbridge_vercel::model::partner::ResourceList), crate::openapi::doc::VercelErrors),
    security(("vercel_oidc" = [], "vercel_auth_style" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    partner: Partner<Read>,
) -> Answer {
    let query = query_map(query.as_deref());
    let ids: Vec<String> = query
        .get("ids")
        .map(|ids| {
            ids.split(',')
                .map(str::trim)
                .filter(|id| ResourceId::parse("ids", id).is_ok())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if query.get("ids").is_some_and(|v| !v.trim().is_empty()) && ids.is_empty() {
        return Ok(Json(ResourceList {
            resources: Vec::new(),
        })
        .into_response());
    }
    let account = partner.installed_account(&state).await?;
    let mut plans = BTreeMap::new();
    let mut resources = Vec::new();
    for resource in account_resources(&state, &account.id, &ids).await? {
        let plan_key = (resource.product_id.clone(), resource.plan_id.clone());
        if !plans.contains_key(&plan_key) {
            let found = plan(&state, &resource.product_id, &resource.plan_id).await?;
            plans.insert(plan_key.clone(), found);
        }
        resources.push(convert::resource(
            &resource,
            plans.get(&plan_key).cloned().flatten(),
        ));
    }
    Ok(Json(ResourceList { resources }).into_response())
}

/// `PATCH /v1/installations/{installationId}/resources/{resourceId}`: name,
/// metadata and plan; answers the resource.
#[utoipa::path(
    operation_id = "resource_update",
    patch,
    path = "/v1/installations/{installation_id}/resources/{resource_id}",
    tag = "vercel",
    params(("installation_id" = String, Path, description = "The Vercel installation (`icfg_...`); must be the token's"), ("resource_id" = String, Path, description = "Our resource id (`res_...`)"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for a retried call: 1 to 200 visible ASCII characters")),
    request_body(content = Option<marketbridge_vercel::model::partner::UpdateResource>, content_type = "application/json"),
    responses((status = 200, description = "The resource after the change", body = marketbridge_vercel::model::partner::Resource), crate::openapi::doc::VercelErrors),
    security(("vercel_oidc" = [], "vercel_auth_style" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    Path((_installation_id, resource_id)): Path<(String, String)>,
    partner: Partner<UserChange, Bytes>,
) -> Answer {
    let production_only = allowed_environments(&state, &partner.body);
    let body: UpdateResource = parse_optional_json(&partner.body)?;
    let account = partner.installed_account(&state).await?;
    owned_resource(&state, &account.id, &resource_id).await?;
    let updated = operations::update_resource(
        &state,
        &partner.call,
        "vercel.update_resource",
        &account,
        &resource_id,
        ResourceChange {
            name: body.name.clone(),
            metadata: body
                .metadata
                .as_ref()
                .map(|m| convert::metadata(&Value::Object(m.clone())))
                .transpose()?,
            plan_id: body.billing_plan_id.clone(),
            protocol_settings: convert::protocol_settings(body.protocol_settings.as_ref())?,
            production_only,
        },
    )
    .await?;
    Ok(Json(resource_view(&state, &updated).await?).into_response())
}

/// `DELETE /v1/installations/{installationId}/resources/{resourceId}`: 204,
/// also when it was deleted before.
#[utoipa::path(
    operation_id = "resource_delete",
    delete,
    path = "/v1/installations/{installation_id}/resources/{resource_id}",
    tag = "vercel",
    params(("installation_id" = String, Path, description = "The Vercel installation (`icfg_...`); must be the token's"), ("resource_id" = String, Path, description = "Our resource id (`res_...`)"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for a retried call: 1 to 200 visible ASCII characters")),
    responses((status = 204, description = "Deleted (also when it was deleted before)"), crate::openapi::doc::VercelErrors),
    security(("vercel_oidc" = [], "vercel_auth_style" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    Path((_installation_id, resource_id)): Path<(String, String)>,
    installed: Installed<Change>,
) -> Answer {
    operations::delete_resource(
        &state,
        &installed.call,
        "vercel.delete_resource",
        &installed.account,
        &resource_id,
    )
    .await?;
    tracing::info!(installation.id = %installed.call.installation_id, resource.id = %resource_id, "vercel resource deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST .../resources/{resourceId}/secrets/rotate`: `200 {sync:true,
/// secrets}` when the new secrets exist now, `202 {sync:false}` when they
/// are pushed to Vercel later.
#[utoipa::path(
    operation_id = "resource_rotate_secrets",
    post,
    path = "/v1/installations/{installation_id}/resources/{resource_id}/secrets/rotate",
    tag = "vercel",
    params(("installation_id" = String, Path, description = "The Vercel installation (`icfg_...`); must be the token's"), ("resource_id" = String, Path, description = "Our resource id (`res_...`)"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for a retried call: 1 to 200 visible ASCII characters")),
    request_body(content = Option<marketbridge_vercel::model::partner::RotateSecrets>, content_type = "application/json"),
    responses((status = 200, description = "The new secrets (`sync: true`)", body = marketbridge_vercel::model::partner::RotatedSecrets), (status = 202, description = "The new secrets will be pushed to Vercel (`sync: false`)", body = marketbridge_vercel::model::partner::RotatedSecrets), crate::openapi::doc::VercelErrors),
    security(("vercel_oidc" = [], "vercel_auth_style" = []))
)]
pub async fn rotate_secrets(
    State(state): State<AppState>,
    Path((_installation_id, resource_id)): Path<(String, String)>,
    partner: Partner<Change, OptionalPayload<RotateSecrets>>,
) -> Answer {
    let OptionalPayload(body) = &partner.body;
    let grace = convert::grace_seconds(body.delay_old_secrets_expiration_hours)?;
    let account = partner.installed_account(&state).await?;
    let rotated = operations::rotate_secrets(
        &state,
        &partner.call,
        &account,
        &resource_id,
        body.reason.clone().unwrap_or_default(),
        grace,
    )
    .await?;
    if rotated.sync {
        let answer = RotatedSecrets {
            sync: true,
            secrets: Some(convert::secrets(&rotated.secrets)),
            partial: rotated.partial.then_some(true),
        };
        return Ok(Json(answer).into_response());
    }
    let answer = RotatedSecrets {
        sync: false,
        secrets: None,
        partial: None,
    };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// `POST .../resources/{resourceId}/repl`: runs one console command and
/// answers its output as an array of blocks.
#[utoipa::path(
    operation_id = "resource_repl",
    post,
    path = "/v1/installations/{installation_id}/resources/{resource_id}/repl",
    tag = "vercel",
    params(("installation_id" = String, Path, description = "The Vercel installation (`icfg_...`); must be the token's"), ("resource_id" = String, Path, description = "Our resource id (`res_...`)")),
    request_body(content = marketbridge_vercel::model::partner::ReplRequest, content_type = "application/json"),
    responses((status = 200, description = "The command's output", body = Vec<marketbridge_vercel::model::partner::ReplBlock>), crate::openapi::doc::VercelErrors),
    security(("vercel_oidc" = [], "vercel_auth_style" = []))
)]
pub async fn repl(
    State(state): State<AppState>,
    Path((installation_id, resource_id)): Path<(String, String)>,
    verified: Verified<VercelError, Payload<ReplRequest>>,
) -> Answer {
    let Payload(body) = &verified.body;
    let read_only = body.read_only.unwrap_or(false);
    // Reading needs any member; a command that may write needs an admin
    // user: Vercel's own (system) tokens never run writing commands.
    let access = if read_only {
        Access::Read
    } else {
        Access::UserChange
    };
    verified
        .caller
        .allow_installation(&installation_id, access)?;
    let account = installed_account(&state, &installation_id).await?;
    let blocks = run_command(
        &state,
        &account,
        &resource_id,
        body.input.clone(),
        read_only,
    )
    .await?;
    Ok(Json(convert::repl_blocks(&blocks)).into_response())
}
