//! `POST /v1/installations/{installationId}/billing/provision`: a
//! prepayment purchase. Billing checks the Vercel invoice is paid and
//! credits the balance once per invoice.

use super::auth::{Access, authenticate};
use super::body::parse_json;
use super::convert;
use super::error::Answer;
use super::services::installed_account;
use crate::context::{idempotency_key, request_context};
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use marketbridge_core::Error;
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_vercel::model::partner::ProvisionPurchase;

/// Answers `{timestamp, balances}` after crediting.
#[utoipa::path(
    operation_id = "billing_provision_purchase",
    post,
    path = "/v1/installations/{installation_id}/billing/provision",
    tag = "vercel",
    params(("installation_id" = String, Path, description = "The Vercel installation (`icfg_...`); must be the token's"), ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for a retried call: 1 to 200 visible ASCII characters")),
    request_body(content = marketbridge_vercel::model::partner::ProvisionPurchase, content_type = "application/json"),
    responses((status = 200, description = "The balances after crediting the purchase", body = marketbridge_vercel::model::partner::Balances), crate::openapi::doc::VercelErrors),
    security(("vercel_oidc" = [], "vercel_auth_style" = []))
)]
pub async fn provision_purchase(
    State(state): State<AppState>,
    Path(installation_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let caller = authenticate(&state.vercel, &headers).await?;
    caller.allow_installation(&installation_id, Access::Change)?;
    let key = idempotency_key(&headers)?;
    let body: ProvisionPurchase = parse_json(&body)?;
    if body.invoice_id.trim().is_empty() {
        return Err(Error::invalid_field("invoiceId", "is required").into());
    }
    let account = installed_account(&state, &installation_id).await?;
    let mut billing = state.clients.billing.clone();
    let balances = billing
        .provision_prepayment(billing_pb::ProvisionPrepaymentRequest {
            context: Some(request_context(
                &installation_id,
                "vercel.provision_purchase",
                key.as_deref(),
                caller.actor(),
            )),
            account_id: account.id,
            marketplace_invoice_id: body.invoice_id.trim().to_owned(),
        })
        .await?
        .into_inner();
    Ok(Json(convert::balances(&balances)).into_response())
}
