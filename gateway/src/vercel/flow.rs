//! The simplified marketplace flow (`{base}/marketplace/...`): the shapes of
//! Vercel's early native-integration guide, served as a thin alias of the
//! partner API. Calls are authenticated the same way (a Vercel token; the
//! installation is the token's), reach the same services, and fail with the
//! flow's own error body `{"error":{"code","message","details"}}`.

use super::body::{metadata_param, parse_json, parse_optional_json, query_map};
use super::convert;
use super::error::{FlowAnswer, FlowFailure};
use super::extract::{Change, Flow, FlowInstalled, Read, UserChange, Verified};
use super::operations::{
    self, Install, NewResource, ResourceChange, connect_project, install, owned_resource,
};
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::IntoResponse;
use marketbridge_core::{Error, ErrorCode, Result};
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_proto::common::v1::Secret;
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_vercel::model::flow::{
    ALL_TARGETS, Account, AccountRequest, ChangePlan, Connect, Connection, CreateResource,
    CreatedResource, EnvironmentVariable, Plan, PlanList, ResourceState, status_word,
};
use marketbridge_vercel::model::partner::{InstallationAccount, InstallationCredentials};
use serde_json::Value;
use std::collections::BTreeMap;

// The operations the flow's idempotency keys are scoped to (the partner
// API's own names scope its keys, so a key never replays across the two).
const CREATE_RESOURCE: &str = "flow.create_resource";
const CONNECT: &str = "flow.connect";
const DELETE_RESOURCE: &str = "flow.delete_resource";
const CHANGE_PLAN: &str = "flow.change_plan";

/// A body naming another installation than the token's is refused.
fn same_installation(token_installation: &str, named: Option<&str>) -> Result<()> {
    match named.filter(|n| !n.is_empty()) {
        Some(named) if named != token_installation => Err(Error::permission_denied(
            "the token is for another installation",
        )),
        _ => Ok(()),
    }
}

/// `POST|PUT /marketplace/account`: creates the account and records the
/// accepted terms.
#[utoipa::path(
    operation_id = "flow_account",
    method(post, put),
    path = "/marketplace/account",
    tag = "vercel-flow",
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for a retried call: 1 to 200 visible ASCII characters")),
    request_body(content = Option<marketbridge_vercel::model::flow::AccountRequest>, content_type = "application/json"),
    responses((status = 200, description = "The account", body = marketbridge_vercel::model::flow::Account), crate::openapi::doc::FlowErrors),
    security(("vercel_oidc" = [], "vercel_auth_style" = []))
)]
pub async fn account(State(state): State<AppState>, flow: Flow<UserChange, Bytes>) -> FlowAnswer {
    let body: AccountRequest = parse_optional_json(&flow.body)?;
    same_installation(flow.installation_id(), body.installation_id.as_deref())?;
    let mut policies = body.accepted_policies.clone().unwrap_or_default();
    if policies.is_empty() && body.accept_terms == Some(true) {
        policies.insert(
            "toc".to_owned(),
            marketbridge_core::time::to_rfc3339(chrono::Utc::now()),
        );
    }
    let credentials = body.credentials.as_ref().map(|c| InstallationCredentials {
        access_token: c.access_token.clone(),
        token_type: c.token_type.clone(),
    });
    let details = body.account.clone().or_else(|| {
        body.contact.clone().map(|contact| InstallationAccount {
            contact: Some(contact),
            ..Default::default()
        })
    });
    let team_id = body
        .team_id
        .clone()
        .or(flow.caller.claims.account_id.clone());
    let account = install(
        &state,
        &flow.call,
        Install {
            team_id: team_id.clone(),
            accepted_policies: &policies,
            credentials: credentials.as_ref(),
            account: details.as_ref(),
            scopes: body.scopes.as_deref().unwrap_or_default(),
        },
    )
    .await?;
    Ok(Json(Account {
        installation_id: flow.call.installation_id.clone(),
        team_id,
        status: "active".to_owned(),
        terms_accepted: !account.accepted_terms.is_empty(),
    })
    .into_response())
}

fn features(plan: &billing_pb::Plan) -> Vec<String> {
    plan.details
        .iter()
        .chain(plan.highlighted_details.iter())
        .map(|d| {
            if d.value.is_empty() {
                d.label.clone()
            } else {
                format!("{}: {}", d.label, d.value)
            }
        })
        .collect()
}

/// `GET /marketplace/plans?productId=...&metadata=...`.
#[utoipa::path(
    operation_id = "flow_plans",
    get,
    path = "/marketplace/plans",
    tag = "vercel-flow",
    params(("productId" = Option<String>, Query, description = "The product"), ("metadata" = Option<String>, Query, description = "A JSON object of metadata values the plans are quoted for")),
    responses((status = 200, description = "The plans", body = marketbridge_vercel::model::flow::PlanList), crate::openapi::doc::FlowErrors),
    security(("vercel_oidc" = [], "vercel_auth_style" = []))
)]
pub async fn plans(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    _verified: Verified<FlowFailure>,
) -> FlowAnswer {
    let query = query_map(query.as_deref());
    let product_id = query
        .get("productId")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| Error::invalid_field("productId", "is required"))?;
    let metadata = metadata_param(&query)?;
    let plans = operations::resource_plans(&state, product_id, convert::metadata(&metadata)?, "")
        .await?
        .iter()
        .map(|plan| Plan {
            id: plan.id.clone(),
            name: plan.name.clone(),
            price: plan.price.as_ref().map(|p| p.amount_minor).unwrap_or(0),
            features: features(plan),
            description: plan.description.clone(),
        })
        .collect();
    Ok(Json(PlanList { plans }).into_response())
}

/// A secret as environment variables: the value for every environment
/// without an override, and one variable per override.
fn environment_variables(secrets: &[Secret]) -> Vec<EnvironmentVariable> {
    let mut variables = Vec::new();
    for secret in secrets {
        let default_targets: Vec<String> = ALL_TARGETS
            .iter()
            .filter(|t| !secret.environment_overrides.contains_key(**t))
            .map(|t| (*t).to_owned())
            .collect();
        if !default_targets.is_empty() {
            variables.push(EnvironmentVariable {
                key: secret.name.clone(),
                value: secret.value.clone(),
                target: default_targets,
            });
        }
        for (environment, value) in &secret.environment_overrides {
            variables.push(EnvironmentVariable {
                key: secret.name.clone(),
                value: value.clone(),
                target: vec![environment.clone()],
            });
        }
    }
    variables
}

/// `POST /marketplace/resources`: provisions; answers the resource id,
/// status and environment variables.
#[utoipa::path(
    operation_id = "flow_create_resource",
    post,
    path = "/marketplace/resources",
    tag = "vercel-flow",
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for a retried call: 1 to 200 visible ASCII characters")),
    request_body(content = marketbridge_vercel::model::flow::CreateResource, content_type = "application/json"),
    responses((status = 200, description = "The resource and its variables", body = marketbridge_vercel::model::flow::CreatedResource), crate::openapi::doc::FlowErrors),
    security(("vercel_oidc" = [], "vercel_auth_style" = []))
)]
pub async fn create_resource(
    State(state): State<AppState>,
    flow: Flow<UserChange, Bytes>,
) -> FlowAnswer {
    let body: CreateResource = parse_json(&flow.body).map_err(rename_fields)?;
    same_installation(flow.installation_id(), body.installation_id.as_deref())?;
    let account = flow.installed_account(&state).await?;
    let metadata = convert::metadata(&Value::Object(body.configuration.options.clone()))?;
    let (resource, secrets) = operations::create_resource(
        &state,
        &flow.call,
        CREATE_RESOURCE,
        &account,
        NewResource {
            product_id: body.product_id.clone(),
            plan_id: body.plan_id.clone(),
            name: body.configuration.name.clone(),
            metadata,
            ..Default::default()
        },
    )
    .await
    .map_err(rename_fields)?;
    Ok(Json(CreatedResource {
        resource_id: resource.id.clone(),
        status: status_word(convert::resource_status(resource.status).as_str()).to_owned(),
        environment_variables: environment_variables(&secrets),
    })
    .into_response())
}

/// The partner API's field names in the flow's words.
fn rename_fields(error: Error) -> Error {
    if error.code() != ErrorCode::Validation || error.fields().is_empty() {
        return error;
    }
    let names: BTreeMap<&str, &str> = [("billingPlanId", "planId"), ("name", "configuration.name")]
        .into_iter()
        .collect();
    let mut renamed = Error::validation(error.message().to_owned());
    if let Some(message) = error.user_message() {
        renamed = renamed.with_user_message(message);
    }
    for field in error.fields() {
        let name = names
            .get(field.field.as_str())
            .map(|n| (*n).to_owned())
            .unwrap_or_else(|| field.field.clone());
        renamed = renamed.with_field(name, field.message.clone());
    }
    renamed
}

fn resource_state(resource: &provisioning_pb::Resource) -> ResourceState {
    ResourceState {
        resource_id: resource.id.clone(),
        status: status_word(convert::resource_status(resource.status).as_str()).to_owned(),
        product_id: resource.product_id.clone(),
        plan_id: resource.plan_id.clone(),
        name: resource.name.clone(),
    }
}

/// `GET /marketplace/resources/{id}`.
#[utoipa::path(
    operation_id = "flow_get_resource",
    get,
    path = "/marketplace/resources/{resource_id}",
    tag = "vercel-flow",
    params(("resource_id" = String, Path, description = "Our resource id (`res_...`)")),
    responses((status = 200, description = "The resource", body = marketbridge_vercel::model::flow::ResourceState), crate::openapi::doc::FlowErrors),
    security(("vercel_oidc" = [], "vercel_auth_style" = []))
)]
pub async fn get_resource(
    State(state): State<AppState>,
    Path(resource_id): Path<String>,
    flow: FlowInstalled<Read>,
) -> FlowAnswer {
    let resource = owned_resource(&state, &flow.account.id, &resource_id).await?;
    Ok(Json(resource_state(&resource)).into_response())
}

/// `POST /marketplace/resources/{id}/connect`: records the project
/// connection (Vercel puts the variables into the project).
#[utoipa::path(
    operation_id = "flow_connect",
    post,
    path = "/marketplace/resources/{resource_id}/connect",
    tag = "vercel-flow",
    params(("resource_id" = String, Path, description = "Our resource id (`res_...`)"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for a retried call: 1 to 200 visible ASCII characters")),
    request_body(content = marketbridge_vercel::model::flow::Connect, content_type = "application/json"),
    responses((status = 200, description = "Connected", body = marketbridge_vercel::model::flow::Connection), crate::openapi::doc::FlowErrors),
    security(("vercel_oidc" = [], "vercel_auth_style" = []))
)]
pub async fn connect(
    State(state): State<AppState>,
    Path(resource_id): Path<String>,
    flow: Flow<UserChange, Bytes>,
) -> FlowAnswer {
    let body: Connect = parse_json(&flow.body)?;
    if body
        .resource_id
        .as_deref()
        .is_some_and(|r| r != resource_id)
    {
        return Err(Error::invalid_field("resourceId", "does not match the path").into());
    }
    if body.project_id.trim().is_empty() {
        return Err(Error::invalid_field("projectId", "is required").into());
    }
    let account = flow.installed_account(&state).await?;
    let targets = body
        .targets
        .clone()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| ALL_TARGETS.iter().map(|t| (*t).to_owned()).collect());
    connect_project(
        &state,
        &flow.call,
        CONNECT,
        &account,
        &resource_id,
        &body.project_id,
        &targets,
    )
    .await?;
    Ok(Json(Connection {
        resource_id,
        project_id: body.project_id,
        status: "connected".to_owned(),
        targets,
    })
    .into_response())
}

/// `DELETE /marketplace/resources/{id}`: deletes; answers the resource as
/// `deleted` (also when it was deleted before).
#[utoipa::path(
    operation_id = "flow_delete_resource",
    delete,
    path = "/marketplace/resources/{resource_id}",
    tag = "vercel-flow",
    params(("resource_id" = String, Path, description = "Our resource id (`res_...`)"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for a retried call: 1 to 200 visible ASCII characters")),
    responses((status = 200, description = "Deleted (also when it was deleted before)", body = marketbridge_vercel::model::flow::ResourceState), crate::openapi::doc::FlowErrors),
    security(("vercel_oidc" = [], "vercel_auth_style" = []))
)]
pub async fn delete_resource(
    State(state): State<AppState>,
    Path(resource_id): Path<String>,
    flow: FlowInstalled<Change>,
) -> FlowAnswer {
    let deleted = operations::delete_resource(
        &state,
        &flow.call,
        DELETE_RESOURCE,
        &flow.account,
        &resource_id,
    )
    .await?;
    Ok(Json(resource_state(&deleted)).into_response())
}

/// `PATCH /marketplace/resources/{id}/plan`: moves the resource to
/// `newPlanId`.
#[utoipa::path(
    operation_id = "flow_change_plan",
    patch,
    path = "/marketplace/resources/{resource_id}/plan",
    tag = "vercel-flow",
    params(("resource_id" = String, Path, description = "Our resource id (`res_...`)"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for a retried call: 1 to 200 visible ASCII characters")),
    request_body(content = marketbridge_vercel::model::flow::ChangePlan, content_type = "application/json"),
    responses((status = 200, description = "The resource on its new plan", body = marketbridge_vercel::model::flow::ResourceState), crate::openapi::doc::FlowErrors),
    security(("vercel_oidc" = [], "vercel_auth_style" = []))
)]
pub async fn change_plan(
    State(state): State<AppState>,
    Path(resource_id): Path<String>,
    flow: Flow<UserChange, Bytes>,
) -> FlowAnswer {
    let body: ChangePlan = parse_json(&flow.body)?;
    if body
        .resource_id
        .as_deref()
        .is_some_and(|r| r != resource_id)
    {
        return Err(Error::invalid_field("resourceId", "does not match the path").into());
    }
    let account = flow.installed_account(&state).await?;
    owned_resource(&state, &account.id, &resource_id).await?;
    let updated = operations::update_resource(
        &state,
        &flow.call,
        CHANGE_PLAN,
        &account,
        &resource_id,
        ResourceChange {
            plan_id: Some(body.new_plan_id.clone()),
            ..Default::default()
        },
    )
    .await
    .map_err(|error| {
        if error.fields().iter().any(|f| f.field == "billingPlanId") {
            Error::invalid_field("newPlanId", error.message().to_owned())
        } else {
            error
        }
    })?;
    Ok(Json(resource_state(&updated)).into_response())
}
