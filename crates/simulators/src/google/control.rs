//! The simulator's own control surface for local demos (not part of
//! Google's API): act as the customer (buy, change plan, cancel, delete) or
//! as a person in Producer Portal (approve an entitlement), take Service
//! Control down and back up, see Google's state, and open the provider's signup page the way Google's
//! "Sign up with provider" button does (a form POST of the signup token, or
//! the token in the signup URL's query string).

use super::SimState;
use super::world::ApiError;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::sync::Arc;

type Shared = State<Arc<SimState>>;

/// The form field (or query parameter) carrying the signup token.
const SIGNUP_TOKEN_FIELD: &str = "x-gcp-marketplace-token";

/// The control routes, under `/simulator`.
pub(crate) fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/simulator", get(summary))
        .route("/simulator/purchases", post(purchase))
        .route(
            "/simulator/entitlements/{entitlement}/{action}",
            post(entitlement_action),
        )
        .route("/simulator/accounts/{account}/delete", post(delete_account))
        .route("/simulator/accounts/{account}/signup", get(open_signup))
        .route("/simulator/service-control", post(service_control))
        .with_state(state)
}

fn refused(error: &ApiError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, Json(error.body())).into_response()
}

fn body_json(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

async fn summary(State(state): Shared) -> Response {
    let world = state.world();
    let accounts: Vec<Value> = world
        .accounts
        .values()
        .map(|a| world.account_json(a))
        .collect();
    let entitlements: Vec<Value> = world
        .entitlements
        .values()
        .map(|e| world.entitlement_json(e))
        .collect();
    drop(world);
    let topic = state.topic();
    Json(json!({
        "accounts": accounts,
        "entitlements": entitlements,
        "published": topic.published.len(),
        "pendingPushes": topic.push_queue.len(),
        "unacknowledgedPulls": topic.unacknowledged_pulls(),
    }))
    .into_response()
}

async fn purchase(State(state): Shared, body: Bytes) -> Response {
    let body = body_json(&body);
    let product = body["product"]
        .as_str()
        .unwrap_or(super::PRODUCT)
        .to_owned();
    let plan = body["plan"].as_str().unwrap_or("pro-plan").to_owned();
    let account = body["account"].as_str().map(str::to_owned);
    let now = state.now();
    let (account_id, entitlement_id) =
        state.change_world(|world| world.purchase(now, account.as_deref(), &product, &plan));
    Json(json!({"account": account_id, "entitlement": entitlement_id})).into_response()
}

async fn entitlement_action(
    State(state): Shared,
    Path((entitlement, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let body = body_json(&body);
    let plan = body["plan"].as_str().unwrap_or_default().to_owned();
    let now = state.now();
    let id = entitlement.as_str();
    let result = state.change_world(|world| match action.as_str() {
        "plan-change" => world.request_plan_change(now, id, &plan),
        "withdraw-plan-change" => world.withdraw_plan_change(now, id),
        "end-billing-cycle" => world.end_billing_cycle(now, id),
        "cancel" => world.cancel(now, id),
        "revert-cancellation" => world.revert_cancellation(now, id),
        "end-term" => world.end_term(now, id),
        "cancel-now" => world.cancel_immediately(now, id, "user-cancelled"),
        "renew" => world.renew(now, id),
        "approve-in-producer-portal" => world.approve_in_producer_portal(now, id),
        "delete" => world.delete_entitlement(now, id),
        _ => Err(ApiError::new(404, "NOT_FOUND", "Unknown action.")),
    });
    match result {
        Ok(()) => Json(json!({})).into_response(),
        Err(error) => refused(&error),
    }
}

async fn delete_account(State(state): Shared, Path(account): Path<String>) -> Response {
    let now = state.now();
    match state.change_world(|world| world.delete_account(now, &account)) {
        Ok(()) => Json(json!({})).into_response(),
        Err(error) => refused(&error),
    }
}

/// `POST /simulator/service-control` with `{"outage": true}`: Service
/// Control answers 503 to every check and report until `{"outage": false}`.
async fn service_control(State(state): Shared, body: Bytes) -> Response {
    let Some(down) = body_json(&body)["outage"].as_bool() else {
        return refused(&ApiError::invalid("`outage` (true or false) is required."));
    };
    state.set_service_control_outage(down);
    Json(json!({"outage": down})).into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `GET /simulator/accounts/{account}/signup`: the "Sign up with provider"
/// button, posting the token in a form; with `?carrier=query`, the link
/// variant that puts it in the signup URL's query string (a 303 there).
async fn open_signup(
    State(state): Shared,
    Path(account): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    if !state.world().accounts.contains_key(&account) {
        return refused(&ApiError::not_found("Account"));
    }
    let Some(url) = state.signup_url() else {
        return refused(&ApiError::new(
            400,
            "FAILED_PRECONDITION",
            "No signup URL is configured for this simulator.",
        ));
    };
    let token = state.signup_token(&account);
    if query.get("carrier").map(String::as_str) == Some("query") {
        let Ok(mut location) = reqwest::Url::parse(&url) else {
            return refused(&ApiError::invalid("The signup URL is not a URL."));
        };
        location
            .query_pairs_mut()
            .append_pair(SIGNUP_TOKEN_FIELD, &token);
        return (
            StatusCode::SEE_OTHER,
            [(axum::http::header::LOCATION, location.to_string())],
        )
            .into_response();
    }
    let html = format!(
        r#"<!doctype html><html><body onload="document.forms[0].submit()">
<form method="post" action="{url}"><input type="hidden" name="x-gcp-marketplace-token" value="{token}">
<noscript><button type="submit">Sign up with provider</button></noscript></form></body></html>"#,
        url = escape(&url),
        token = escape(&token),
    );
    Html(html).into_response()
}
