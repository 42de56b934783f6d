//! `/v1/installations/{installationId}/resource-transfer-requests...`:
//! claim deployments. The source installation offers resources (`POST`, or
//! the older `PUT .../{transferId}`), the target installation (the one in
//! the path, and the token's) verifies and accepts the claim; accepting
//! moves the resources, with their plans and billing, to the target.

use super::error::Answer;
use super::extract::{Change, Installed, OptionalPayload, Partner, Payload, Read};
use super::operations::{accept_transfer, offer_transfer, plan, verify_transfer};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use marketbridge_core::time::to_timestamp;
use marketbridge_core::{Error, Result};
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
    partner: Partner<Change, Payload<CreateTransferRequest>>,
) -> Answer {
    offer(&state, &partner, None).await
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
    Path((_installation_id, transfer_id)): Path<(String, String)>,
    partner: Partner<Change, Payload<CreateTransferRequest>>,
) -> Answer {
    offer(&state, &partner, Some(transfer_id)).await
}

async fn offer(
    state: &AppState,
    partner: &Partner<Change, Payload<CreateTransferRequest>>,
    path_id: Option<String>,
) -> Answer {
    let Payload(body) = &partner.body;
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
    let account = partner.installed_account(state).await?;
    let claim = offer_transfer(
        state,
        &partner.call,
        &account,
        body.resource_ids.clone(),
        to_timestamp(expires_at),
        claim_id,
    )
    .await?;
    tracing::info!(installation.id = %partner.installation_id(), claim.id = %claim.id, "vercel transfer request created");
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
    Path((_installation_id, claim_id)): Path<(String, String)>,
    target: Installed<Read>,
) -> Answer {
    let verified = verify_transfer(&state, &target.account, &claim_id).await?;
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
    Path((_installation_id, claim_id)): Path<(String, String)>,
    partner: Partner<Change, OptionalPayload<AcceptTransferRequest>>,
) -> Answer {
    let OptionalPayload(body) = &partner.body;
    check_target(body, partner.installation_id())?;
    let target = partner.installed_account(&state).await?;
    let claim = accept_transfer(&state, &partner.call, &target, claim_id).await?;
    tracing::info!(installation.id = %partner.installation_id(), claim.id = %claim.id, resources = claim.resource_ids.len(), "vercel transfer accepted");
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
