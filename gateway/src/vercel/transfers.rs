//! `/v1/installations/{installationId}/resource-transfer-requests...`:
//! claim deployments. The source installation offers resources (`POST`, or
//! the older `PUT .../{transferId}`), the target installation (the one in
//! the path, and the token's) verifies and accepts the claim; accepting
//! moves the resources, with their plans and billing, to the target.

use super::auth::{Access, authenticate};
use super::body::{parse_json, parse_optional_json};
use super::error::Answer;
use super::services::{installed_account, plan};
use crate::context::{idempotency_key, request_context};
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use marketbridge_core::time::to_timestamp;
use marketbridge_core::{Error, Result};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_vercel::model::partner::{
    AcceptTransferRequest, CreateTransferRequest, CreatedTransferRequest, VerifiedTransferRequest,
};

/// `POST .../resource-transfer-requests`: answers `{providerClaimId}`.
#[utoipa::path(
    operation_id = "transfer_create",
    post,
    path = "/v1/installations/{installation_id}/resource-transfer-requests",
    tag = "vercel",
    params(("installation_id" = String, Path, description = "The Vercel installation (`icfg_...`); must be the token's"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for a retried call: 1 to 200 visible ASCII characters")),
    request_body(content = marketbridge_vercel::model::partner::CreateTransferRequest, content_type = "application/json"),
    responses((status = 200, description = "The claim", body = marketbridge_vercel::model::partner::CreatedTransferRequest), crate::openapi::doc::VercelErrors),
    security(("vercel_oidc" = [], "vercel_auth_style" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Path(installation_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    offer(&state, &installation_id, None, &headers, &body).await
}

/// `PUT .../resource-transfer-requests/{transferId}` (the older shape): the
/// claim takes the caller's id (`claimId`, else the path's).
#[utoipa::path(
    operation_id = "transfer_create_with_id",
    put,
    path = "/v1/installations/{installation_id}/resource-transfer-requests/{claim_id}",
    tag = "vercel",
    params(("installation_id" = String, Path, description = "The Vercel installation (`icfg_...`); must be the token's"), ("claim_id" = String, Path, description = "The transfer claim id"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for a retried call: 1 to 200 visible ASCII characters")),
    request_body(content = marketbridge_vercel::model::partner::CreateTransferRequest, content_type = "application/json"),
    responses((status = 200, description = "The claim", body = marketbridge_vercel::model::partner::CreatedTransferRequest), crate::openapi::doc::VercelErrors),
    security(("vercel_oidc" = [], "vercel_auth_style" = []))
)]
pub async fn create_with_id(
    State(state): State<AppState>,
    Path((installation_id, transfer_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    offer(&state, &installation_id, Some(transfer_id), &headers, &body).await
}

async fn offer(
    state: &AppState,
    installation_id: &str,
    path_id: Option<String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Answer {
    let caller = authenticate(&state.vercel, headers).await?;
    caller.allow_installation(installation_id, Access::Change)?;
    let key = idempotency_key(headers)?;
    let body: CreateTransferRequest = parse_json(body)?;
    let expires_at = match &body.expires_at {
        None => return Err(Error::invalid_field("expiresAt", "is required").into()),
        Some(value) => value.to_time().ok_or_else(|| {
            Error::invalid_field("expiresAt", "must be a time in epoch milliseconds")
        })?,
    };
    let claim_id = body
        .claim_id
        .clone()
        .filter(|id| !id.trim().is_empty())
        .or(path_id)
        .unwrap_or_default();
    let account = installed_account(state, installation_id).await?;
    let mut provisioning = state.clients.provisioning.clone();
    let claim = provisioning
        .create_transfer_claim(provisioning_pb::CreateTransferClaimRequest {
            context: Some(request_context(
                installation_id,
                "vercel.create_transfer",
                key.as_deref(),
                caller.actor(),
            )),
            account_id: account.id,
            resource_ids: body.resource_ids.clone(),
            expires_at: Some(to_timestamp(expires_at)),
            claim_id,
        })
        .await?
        .into_inner();
    tracing::info!(installation.id = %installation_id, claim.id = %claim.id, "vercel transfer request created");
    Ok(Json(CreatedTransferRequest {
        provider_claim_id: claim.id,
    })
    .into_response())
}

/// `GET` (or, older, `POST`) `.../resource-transfer-requests/{claimId}/verify`
/// with the target installation in the path: `{valid:true, billingPlan}`,
/// 404 for an unknown claim, 409 when taken or no longer transferable, 422
/// once expired.
#[utoipa::path(
    operation_id = "transfer_verify",
    method(get, post),
    path = "/v1/installations/{installation_id}/resource-transfer-requests/{claim_id}/verify",
    tag = "vercel",
    params(("installation_id" = String, Path, description = "The Vercel installation (`icfg_...`); must be the token's"), ("claim_id" = String, Path, description = "The transfer claim id")),
    responses((status = 200, description = "The claim can be accepted by the installation", body = marketbridge_vercel::model::partner::VerifiedTransferRequest), crate::openapi::doc::VercelErrors),
    security(("vercel_oidc" = [], "vercel_auth_style" = []))
)]
pub async fn verify(
    State(state): State<AppState>,
    Path((installation_id, claim_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let caller = authenticate(&state.vercel, &headers).await?;
    caller.allow_installation(&installation_id, Access::Read)?;
    let target = installed_account(&state, &installation_id).await?;
    let mut provisioning = state.clients.provisioning.clone();
    let verified = provisioning
        .verify_transfer_claim(provisioning_pb::VerifyTransferClaimRequest {
            claim_id: claim_id.clone(),
            target_account_id: target.id,
        })
        .await?
        .into_inner();
    let billing_plan = match verified.resources.first() {
        Some(resource) => plan(&state, &resource.product_id, &resource.plan_id).await?,
        None => None,
    };
    Ok(Json(VerifiedTransferRequest {
        valid: true,
        billing_plan,
    })
    .into_response())
}

/// `POST .../resource-transfer-requests/{claimId}/accept` with the target
/// installation in the path: 204; accepting again changes nothing.
#[utoipa::path(
    operation_id = "transfer_accept",
    post,
    path = "/v1/installations/{installation_id}/resource-transfer-requests/{claim_id}/accept",
    tag = "vercel",
    params(("installation_id" = String, Path, description = "The Vercel installation (`icfg_...`); must be the token's"), ("claim_id" = String, Path, description = "The transfer claim id"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for a retried call: 1 to 200 visible ASCII characters")),
    request_body(content = Option<marketbridge_vercel::model::partner::AcceptTransferRequest>, content_type = "application/json"),
    responses((status = 204, description = "Accepted (accepting again changes nothing)"), crate::openapi::doc::VercelErrors),
    security(("vercel_oidc" = [], "vercel_auth_style" = []))
)]
pub async fn accept(
    State(state): State<AppState>,
    Path((installation_id, claim_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let caller = authenticate(&state.vercel, &headers).await?;
    caller.allow_installation(&installation_id, Access::Change)?;
    let key = idempotency_key(&headers)?;
    let body: AcceptTransferRequest = parse_optional_json(&body)?;
    check_target(&body, &installation_id)?;
    let target = installed_account(&state, &installation_id).await?;
    let mut provisioning = state.clients.provisioning.clone();
    let claim = provisioning
        .accept_transfer_claim(provisioning_pb::AcceptTransferClaimRequest {
            context: Some(request_context(
                &installation_id,
                "vercel.accept_transfer",
                key.as_deref(),
                caller.actor(),
            )),
            claim_id,
            target_account_id: target.id,
        })
        .await?
        .into_inner();
    tracing::info!(installation.id = %installation_id, claim.id = %claim.id, resources = claim.resource_ids.len(), "vercel transfer accepted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A target installation named in the body must be the path's.
fn check_target(body: &AcceptTransferRequest, installation_id: &str) -> Result<()> {
    match body.target_installation_id.as_deref().map(str::trim) {
        Some(named) if !named.is_empty() && named != installation_id => Err(Error::invalid_field(
            "targetInstallationId",
            "must be the installation in the path",
        )),
        _ => Ok(()),
    }
}
