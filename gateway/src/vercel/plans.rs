//! The plan listings: a product's plans (before or at provisioning), the
//! installation-level plans, and the plans a resource may change to. Plans
//! may depend on the metadata the customer entered (`?metadata=<json>`).

use super::auth::{Access, authenticate};
use super::body::{metadata_param, query_map};
use super::convert;
use super::error::Answer;
use super::services::{find_account, installed_account, list_plans};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use marketbridge_core::ids::ResourceId;
use marketbridge_core::{Error, ErrorCode};
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_proto::common::v1::Marketplace;
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_vercel::model::plan::PlanList;

/// `GET /v1/products/{productSlug}/plans`. May be called before anything
/// is installed, with a system token naming no installation.
#[utoipa::path(
    operation_id = "plans_product_plans",
    get,
    path = "/v1/products/{product_slug}/plans",
    tag = "vercel",
    params(("product_slug" = String, Path, description = "The product id or slug"), ("metadata" = Option<String>, Query, description = "A JSON object of metadata values the plans are quoted for")),
    responses((status = 200, description = "The resource plans of the product", body = marketbridge_vercel::model::plan::PlanList), crate::openapi::doc::VercelErrors),
    security(("vercel_oidc" = [], "vercel_auth_style" = []))
)]
pub async fn product_plans(
    State(state): State<AppState>,
    Path(product_slug): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Answer {
    let caller = authenticate(&state.vercel, &headers).await?;
    caller.allow(Access::Read)?;
    let metadata = metadata_param(&query_map(query.as_deref()))?;
    // An installed team may see plans reserved for it.
    let account_id = match caller.claims.installation_id.as_deref() {
        Some(installation_id) if !installation_id.is_empty() => {
            find_account(&state, installation_id)
                .await?
                .map(|a| a.id)
                .unwrap_or_default()
        }
        _ => String::new(),
    };
    let plans = list_plans(
        &state,
        billing_pb::ListPlansRequest {
            product_id: product_slug.clone(),
            metadata: Some(convert::metadata(&metadata)?),
            marketplace: Marketplace::Vercel as i32,
            scope: billing_pb::PlanScope::Resource as i32,
            account_id,
            resource_id: String::new(),
        },
    )
    .await
    .map_err(|error| {
        if error.code() == ErrorCode::NotFound {
            Error::invalid_field("productSlug", format!("unknown product `{product_slug}`"))
                .with_user_message("This product does not exist")
        } else {
            error
        }
    })?;
    Ok(Json(PlanList { plans }).into_response())
}

/// `GET /v1/installations/{installationId}/plans`: installation-level plans.
#[utoipa::path(
    operation_id = "plans_installation_plans",
    get,
    path = "/v1/installations/{installation_id}/plans",
    tag = "vercel",
    params(("installation_id" = String, Path, description = "The Vercel installation (`icfg_...`); must be the token's")),
    responses((status = 200, description = "The installation-level plans", body = marketbridge_vercel::model::plan::PlanList), crate::openapi::doc::VercelErrors),
    security(("vercel_oidc" = [], "vercel_auth_style" = []))
)]
pub async fn installation_plans(
    State(state): State<AppState>,
    Path(installation_id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let caller = authenticate(&state.vercel, &headers).await?;
    caller.allow_installation(&installation_id, Access::Read)?;
    let account = installed_account(&state, &installation_id).await?;
    let plans = list_plans(
        &state,
        billing_pb::ListPlansRequest {
            marketplace: Marketplace::Vercel as i32,
            scope: billing_pb::PlanScope::Account as i32,
            account_id: account.id,
            ..Default::default()
        },
    )
    .await?;
    Ok(Json(PlanList { plans }).into_response())
}

/// `GET /v1/installations/{installationId}/resources/{resourceId}/plans`:
/// the plans the resource may move to, for the metadata given (or its own).
#[utoipa::path(
    operation_id = "plans_resource_plans",
    get,
    path = "/v1/installations/{installation_id}/resources/{resource_id}/plans",
    tag = "vercel",
    params(("installation_id" = String, Path, description = "The Vercel installation (`icfg_...`); must be the token's"), ("resource_id" = String, Path, description = "Our resource id (`res_...`)"), ("metadata" = Option<String>, Query, description = "A JSON object of metadata values the plans are quoted for")),
    responses((status = 200, description = "The plans the resource may move to", body = marketbridge_vercel::model::plan::PlanList), crate::openapi::doc::VercelErrors),
    security(("vercel_oidc" = [], "vercel_auth_style" = []))
)]
pub async fn resource_plans(
    State(state): State<AppState>,
    Path((installation_id, resource_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Answer {
    let caller = authenticate(&state.vercel, &headers).await?;
    caller.allow_installation(&installation_id, Access::Read)?;
    let query = query_map(query.as_deref());
    let metadata = metadata_param(&query)?;
    let account = installed_account(&state, &installation_id).await?;
    let resource = owned_resource(&state, &account.id, &resource_id).await?;
    let metadata = if query.contains_key("metadata") {
        convert::metadata(&metadata)?
    } else {
        resource.metadata.clone().unwrap_or_default()
    };
    let plans = list_plans(
        &state,
        billing_pb::ListPlansRequest {
            product_id: resource.product_id.clone(),
            metadata: Some(metadata),
            marketplace: Marketplace::Vercel as i32,
            scope: billing_pb::PlanScope::Resource as i32,
            account_id: account.id,
            resource_id: String::new(),
        },
    )
    .await?;
    Ok(Json(PlanList { plans }).into_response())
}

/// A live resource of the account, or 404 (also for ids that are not ours
/// and for uninstalled resources).
pub async fn owned_resource(
    state: &AppState,
    account_id: &str,
    resource_id: &str,
) -> marketbridge_core::Result<provisioning_pb::Resource> {
    if ResourceId::parse("resourceId", resource_id).is_err() {
        return Err(Error::not_found("resource not found"));
    }
    let mut provisioning = state.clients.provisioning.clone();
    let resource = provisioning
        .get_resource(provisioning_pb::GetResourceRequest {
            resource_id: resource_id.to_owned(),
            account_id: account_id.to_owned(),
        })
        .await?
        .into_inner();
    if resource.status == provisioning_pb::ResourceStatus::Uninstalled as i32 {
        return Err(Error::not_found("the resource was deleted"));
    }
    Ok(resource)
}
