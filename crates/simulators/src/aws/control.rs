//! The simulator's control API for trying the flow by hand (`marketbridge
//! sim aws`): buy, click "Set up your account", change the contract,
//! deprovision, and read what AWS holds. Each change delivers its
//! EventBridge event at once.

use super::{Held, SimState, lock};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A purchase asked for.
#[derive(Debug, Deserialize)]
pub(crate) struct PurchaseBody {
    /// Buyer account (12 digits).
    #[serde(default = "default_account")]
    account: String,
    /// Contract dimensions and quantities.
    #[serde(default = "default_entitlements")]
    entitlements: BTreeMap<String, i64>,
    /// A legacy (`CustomerIdentifier`) purchase.
    #[serde(default)]
    legacy: bool,
}

fn default_account() -> String {
    "012345678901".into()
}

fn default_entitlements() -> BTreeMap<String, i64> {
    BTreeMap::from([("pro_tier".to_owned(), 1)])
}

/// New contract quantities.
#[derive(Debug, Deserialize)]
pub(crate) struct EntitlementsBody {
    entitlements: BTreeMap<String, i64>,
    /// `agreement` announces the change with `Purchase Agreement Amended`
    /// (no license in it) instead of `License Updated`.
    #[serde(default)]
    announce: String,
}

async fn send_event(state: &SimState, key: &str, detail_type: &str) -> u16 {
    let Some(event) = state.event(key, detail_type) else {
        return 404;
    };
    // Sent now rather than held.
    lock(&state.held).retain(|h| !matches!(h, Held::Event(e) if e["id"] == event["id"]));
    state.post(&Held::Event(event)).await.status
}

pub(crate) async fn overview(State(state): State<Arc<SimState>>) -> Json<Value> {
    let world = lock(&state.world);
    let licenses: Vec<Value> = world
        .licenses
        .iter()
        .map(|(key, l)| {
            json!({
                "key": key,
                "customerAWSAccountId": l.customer_aws_account_id,
                "customerIdentifier": l.customer_identifier,
                "agreementId": l.agreement_id,
                "entitlements": l.entitlements,
                "state": format!("{:?}", l.state),
            })
        })
        .collect();
    let accepted: Vec<Value> = world
        .accepted
        .values()
        .map(|r| {
            json!({
                "license": r.licensee.key(),
                "dimension": r.dimension,
                "hour": r.hour,
                "quantity": r.quantity,
                "meteringRecordId": r.metering_record_id,
            })
        })
        .collect();
    Json(json!({"productCode": world.product_code, "licenses": licenses, "accepted": accepted}))
}

pub(crate) async fn purchase(
    State(state): State<Arc<SimState>>,
    Json(body): Json<PurchaseBody>,
) -> Response {
    let entitlements: Vec<(&str, i64)> = body
        .entitlements
        .iter()
        .map(|(d, q)| (d.as_str(), *q))
        .collect();
    let key = lock(&state.world).purchase(&body.account, &entitlements, body.legacy, None);
    let status = send_event(&state, &key, "License Updated - Manufacturer").await;
    let base = state.base_url.get().cloned().unwrap_or_default();
    (
        StatusCode::CREATED,
        Json(json!({
            "license": key,
            "eventDelivered": status,
            "setUpYourAccount": format!("{base}/simulator/licenses/{key}/setup"),
        })),
    )
        .into_response()
}

pub(crate) async fn setup(State(state): State<Arc<SimState>>, Path(key): Path<String>) -> Response {
    let now = state.clock.now();
    let token = {
        let mut world = lock(&state.world);
        if !world.licenses.contains_key(&key) {
            return (StatusCode::NOT_FOUND, "unknown license").into_response();
        }
        world.issue_token(&key, now)
    };
    let url = lock(&state.endpoints).fulfillment_url.clone();
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('"', "&quot;")
            .replace('<', "&lt;")
    };
    Html(format!(
        "<!doctype html><title>AWS Marketplace (simulated)</title>\
         <form method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"x-amzn-marketplace-token\" value=\"{}\">\
         <button>Set up your account</button></form><script>document.forms[0].submit()</script>",
        escape(&url),
        escape(&token)
    ))
    .into_response()
}

pub(crate) async fn change(
    State(state): State<Arc<SimState>>,
    Path(key): Path<String>,
    Json(body): Json<EntitlementsBody>,
) -> Response {
    match lock(&state.world).licenses.get_mut(&key) {
        Some(license) => license.entitlements = body.entitlements,
        None => return (StatusCode::NOT_FOUND, "unknown license").into_response(),
    }
    let status = if body.announce == "agreement" {
        match state.agreement_event(&key, "Purchase Agreement Amended - Manufacturer", "ACTIVE") {
            Some(event) => {
                lock(&state.held)
                    .retain(|h| !matches!(h, Held::Event(e) if e["id"] == event["id"]));
                state.post(&Held::Event(event)).await.status
            }
            None => 404,
        }
    } else {
        send_event(&state, &key, "License Updated - Manufacturer").await
    };
    Json(json!({"license": key, "eventDelivered": status})).into_response()
}

pub(crate) async fn deprovision(
    State(state): State<Arc<SimState>>,
    Path(key): Path<String>,
) -> Response {
    let now = state.clock.now();
    match lock(&state.world).licenses.get_mut(&key) {
        Some(license) => license.state = super::LicenseState::Deprovisioned(now),
        None => return (StatusCode::NOT_FOUND, "unknown license").into_response(),
    }
    let status = send_event(&state, &key, "License Deprovisioned - Manufacturer").await;
    Json(json!({"license": key, "eventDelivered": status})).into_response()
}
