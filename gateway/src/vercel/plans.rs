//! The plan listings: a product's plans (before or at provisioning), the
//! installation-level plans, and the plans a resource may change to. Plans
//! may depend on the metadata the customer entered (`?metadata=<json>`).

use super::body::{metadata_param, query_map};
use super::convert::{self, billing_plan};
use super::error::Answer;
use super::extract::{Installed, Partner, Read, Verified};
use super::operations::{self, find_account_for_read, owned_resource};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::response::IntoResponse;
use marketbridge_core::{Error, ErrorCode};
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_vercel::model::plan::{BillingPlan, PlanList};

fn billing_plans(plans: &[billing_pb::Plan]) -> Vec<BillingPlan> {
    plans.iter().map(billing_plan).collect()
}

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
    verified: Verified,
) -> Answer {
    let metadata = metadata_param(&query_map(query.as_deref()))?;
    // An installed team may see plans reserved for it.
    let account_id = match verified.caller.claims.installation_id.as_deref() {
        Some(installation_id) if !installation_id.is_empty() => {
            find_account_for_read(&state, installation_id)
                .await?
                .map(|a| a.id)
                .unwrap_or_default()
        }
        _ => String::new(),
    };
    let plans = operations::resource_plans(
        &state,
        &product_slug,
        convert::metadata(&metadata)?,
        &account_id,
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
    Ok(Json(PlanList {
        plans: billing_plans(&plans),
    })
    .into_response())
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
    installed: Installed<Read>,
) -> Answer {
    let plans = operations::installation_plans(&state, &installed.account.id).await?;
    Ok(Json(PlanList {
        plans: billing_plans(&plans),
    })
    .into_response())
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
    Path((_installation_id, resource_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    partner: Partner<Read>,
) -> Answer {
    let query = query_map(query.as_deref());
    let metadata = metadata_param(&query)?;
    let account = partner.installed_account(&state).await?;
    let resource = owned_resource(&state, &account.id, &resource_id).await?;
    let metadata = if query.contains_key("metadata") {
        convert::metadata(&metadata)?
    } else {
        resource.metadata.clone().unwrap_or_default()
    };
    let plans =
        operations::resource_plans(&state, &resource.product_id, metadata, &account.id).await?;
    Ok(Json(PlanList {
        plans: billing_plans(&plans),
    })
    .into_response())
}
