//! `/v1/installations/{installationId}/resources...`: provisioning (with
//! the secrets), reading, updating (name, metadata, plan), deleting, the
//! deprecated listing, secret rotation, and the console (`repl`).

use super::auth::{Access, authenticate};
use super::body::{parse_json, parse_optional_json, query_map};
use super::convert;
use super::error::Answer;
use super::plans::owned_resource;
use super::services::{installed_account, plan, set_installation_plan};
use crate::context::{idempotency_key, request_context};
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use marketbridge_core::ids::ResourceId;
use marketbridge_core::{Error, Result};
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
    Path(installation_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let caller = authenticate(&state.vercel, &headers).await?;
    caller.allow_installation(&installation_id, Access::UserChange)?;
    let key = idempotency_key(&headers)?;
    let body: ProvisionResource = parse_json(&body)?;
    let account = installed_account(&state, &installation_id).await?;
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
            let subscription = set_installation_plan(
                &state,
                &account,
                &installation_id,
                &installation_plan,
                key.as_deref(),
                caller.actor(),
            )
            .await?;
            tracing::info!(installation.id = %installation_id, plan = %installation_plan.id, "installation plan set by a provision");
            subscription.id
        }
        None => String::new(),
    };
    let mut provisioning = state.clients.provisioning.clone();
    let created = provisioning
        .create_resource(provisioning_pb::CreateResourceRequest {
            context: Some(request_context(
                &installation_id,
                "vercel.provision",
                key.as_deref(),
                caller.actor(),
            )),
            account_id: account.id.clone(),
            product_id: body.product_id.clone(),
            plan_id: body.billing_plan_id.clone(),
            name: body.name.clone(),
            metadata: Some(convert::metadata(&Value::Object(body.metadata.clone()))?),
            external_id: body.external_id.clone().unwrap_or_default(),
            subscription_id,
            protocol_settings: convert::protocol_settings(body.protocol_settings.as_ref())?,
        })
        .await?
        .into_inner();
    let resource = created
        .resource
        .ok_or_else(|| Error::internal("provisioning answered without a resource"))?;
    tracing::info!(installation.id = %installation_id, resource.id = %resource.id, "vercel resource provisioned");
    let answer = ProvisionedResource {
        resource: resource_view(&state, &resource).await?,
        secrets: convert::secrets(&created.secrets),
    };
    Ok(Json(answer).into_response())
}

/// The installation-scoped plan `plan_id` of `product_id`, when Provision
/// Resource names one (Vercel's plan lists may mix both scopes); `None` for
/// a resource plan or anything unknown (creating the resource then answers
/// the 400).
async fn installation_scoped_plan(
    state: &AppState,
    product_id: &str,
    plan_id: &str,
    account_id: &str,
) -> Result<Option<marketbridge_proto::billing::v1::Plan>> {
    use marketbridge_proto::billing::v1 as billing_pb;
    if product_id.is_empty() || plan_id.is_empty() {
        return Ok(None);
    }
    let mut billing = state.clients.billing.clone();
    let answer = billing
        .list_plans(billing_pb::ListPlansRequest {
            product_id: product_id.to_owned(),
            marketplace: marketbridge_proto::common::v1::Marketplace::Vercel as i32,
            scope: billing_pb::PlanScope::Account as i32,
            account_id: account_id.to_owned(),
            ..Default::default()
        })
        .await;
    let plans = match answer {
        Ok(plans) => plans.into_inner().plans,
        Err(status) => {
            let error = Error::from(status);
            if matches!(
                error.code(),
                marketbridge_core::ErrorCode::NotFound | marketbridge_core::ErrorCode::Validation
            ) {
                return Ok(None);
            }
            return Err(error);
        }
    };
    Ok(plans
        .into_iter()
        .find(|plan| plan.id == plan_id && !plan.disabled))
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
    Path((installation_id, resource_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let caller = authenticate(&state.vercel, &headers).await?;
    caller.allow_installation(&installation_id, Access::Read)?;
    let account = installed_account(&state, &installation_id).await?;
    let resource = owned_resource(&state, &account.id, &resource_id).await?;
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
    Path(installation_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Answer {
    let caller = authenticate(&state.vercel, &headers).await?;
    caller.allow_installation(&installation_id, Access::Read)?;
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
    let account = installed_account(&state, &installation_id).await?;
    let mut provisioning = state.clients.provisioning.clone();
    let mut resources = Vec::new();
    let mut page_token = String::new();
    let mut plans = BTreeMap::new();
    loop {
        let page = provisioning
            .list_resources(provisioning_pb::ListResourcesRequest {
                account_id: account.id.clone(),
                resource_ids: ids.clone(),
                include_deleted: false,
                page: Some(marketbridge_proto::common::v1::PageRequest {
                    page_size: 500,
                    page_token: page_token.clone(),
                }),
            })
            .await?
            .into_inner();
        for resource in &page.resources {
            let plan_key = (resource.product_id.clone(), resource.plan_id.clone());
            if !plans.contains_key(&plan_key) {
                let found = plan(&state, &resource.product_id, &resource.plan_id).await?;
                plans.insert(plan_key.clone(), found);
            }
            resources.push(convert::resource(
                resource,
                plans.get(&plan_key).cloned().flatten(),
            ));
        }
        page_token = page.page.map(|p| p.next_page_token).unwrap_or_default();
        if page_token.is_empty() {
            break;
        }
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
    Path((installation_id, resource_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let caller = authenticate(&state.vercel, &headers).await?;
    caller.allow_installation(&installation_id, Access::UserChange)?;
    let key = idempotency_key(&headers)?;
    let production_only = allowed_environments(&state, &body);
    let body: UpdateResource = parse_optional_json(&body)?;
    let account = installed_account(&state, &installation_id).await?;
    owned_resource(&state, &account.id, &resource_id).await?;
    let mut provisioning = state.clients.provisioning.clone();
    let updated = provisioning
        .update_resource(provisioning_pb::UpdateResourceRequest {
            context: Some(request_context(
                &installation_id,
                "vercel.update_resource",
                key.as_deref(),
                caller.actor(),
            )),
            resource_id: resource_id.clone(),
            account_id: account.id.clone(),
            name: body.name.clone(),
            metadata: body
                .metadata
                .as_ref()
                .map(|m| convert::metadata(&Value::Object(m.clone())))
                .transpose()?,
            plan_id: body.billing_plan_id.clone(),
            status: 0,
            status_message: None,
            protocol_settings: convert::protocol_settings(body.protocol_settings.as_ref())?,
            production_only,
        })
        .await?
        .into_inner();
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
    Path((installation_id, resource_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let caller = authenticate(&state.vercel, &headers).await?;
    caller.allow_installation(&installation_id, Access::Change)?;
    let key = idempotency_key(&headers)?;
    let account = installed_account(&state, &installation_id).await?;
    if ResourceId::parse("resourceId", &resource_id).is_err() {
        return Err(Error::not_found("resource not found").into());
    }
    let mut provisioning = state.clients.provisioning.clone();
    provisioning
        .delete_resource(provisioning_pb::DeleteResourceRequest {
            context: Some(request_context(
                &installation_id,
                "vercel.delete_resource",
                key.as_deref(),
                caller.actor(),
            )),
            resource_id: resource_id.clone(),
            account_id: account.id,
        })
        .await?;
    tracing::info!(installation.id = %installation_id, resource.id = %resource_id, "vercel resource deleted");
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
    Path((installation_id, resource_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let caller = authenticate(&state.vercel, &headers).await?;
    caller.allow_installation(&installation_id, Access::Change)?;
    let key = idempotency_key(&headers)?;
    let body: RotateSecrets = parse_optional_json(&body)?;
    let grace = convert::grace_seconds(body.delay_old_secrets_expiration_hours)?;
    let account = installed_account(&state, &installation_id).await?;
    owned_resource(&state, &account.id, &resource_id).await?;
    let mut provisioning = state.clients.provisioning.clone();
    let rotated = provisioning
        .rotate_secrets(provisioning_pb::RotateSecretsRequest {
            context: Some(request_context(
                &installation_id,
                "vercel.rotate_secrets",
                key.as_deref(),
                caller.actor(),
            )),
            resource_id: resource_id.clone(),
            account_id: account.id,
            reason: body.reason.unwrap_or_default(),
            old_secrets_valid_for_seconds: grace,
        })
        .await?
        .into_inner();
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
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let caller = authenticate(&state.vercel, &headers).await?;
    let body: ReplRequest = parse_json(&body)?;
    let read_only = body.read_only.unwrap_or(false);
    // Reading needs any member; a command that may write needs an admin
    // user: Vercel's own (system) tokens never run writing commands.
    let access = if read_only {
        Access::Read
    } else {
        Access::UserChange
    };
    caller.allow_installation(&installation_id, access)?;
    let account = installed_account(&state, &installation_id).await?;
    // Provisioning checks the resource is this account's and not deleted.
    if ResourceId::parse("resourceId", &resource_id).is_err() {
        return Err(Error::not_found("resource not found").into());
    }
    let mut provisioning = state.clients.provisioning.clone();
    let output = provisioning
        .run_resource_command(provisioning_pb::RunResourceCommandRequest {
            resource_id,
            account_id: account.id,
            input: body.input,
            read_only,
        })
        .await?
        .into_inner();
    Ok(Json(convert::repl_blocks(&output.blocks)).into_response())
}
