//! `POST /v1/installations/{installationId}/billing/provision`: a
//! prepayment purchase. Billing checks the Vercel invoice is paid and
//! credits the balance once per invoice.

use super::convert;
use super::error::Answer;
use super::extract::{Change, Partner, Payload};
use super::operations::provision_prepayment;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use marketbridge_core::Error;
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
    partner: Partner<Change, Payload<ProvisionPurchase>>,
) -> Answer {
    let Payload(body) = &partner.body;
    if body.invoice_id.trim().is_empty() {
        return Err(Error::invalid_field("invoiceId", "is required").into());
    }
    let account = partner.installed_account(&state).await?;
    let balances =
        provision_prepayment(&state, &partner.call, &account, body.invoice_id.trim()).await?;
    Ok(Json(convert::balances(&balances)).into_response())
}
