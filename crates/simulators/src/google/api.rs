//! The HTTP APIs the simulator serves to the provider: the Partner
//! Procurement API, the Pub/Sub pull API, Service Control, the OAuth token
//! endpoint, and the published signing keys. Every request is recorded and
//! may be failed on demand (see [`crate::common::observe`]).

use super::SimState;
use super::world::ApiError;
use crate::common::{jwks, observe};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

type Shared = State<Arc<SimState>>;

/// Every route of the simulated Google APIs.
pub(crate) fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/v1/providers/{provider}/accounts", get(list_accounts))
        .route(
            "/v1/providers/{provider}/accounts/{account}",
            get(get_account).post(account_action),
        )
        .route(
            "/v1/providers/{provider}/entitlements",
            get(list_entitlements),
        )
        .route(
            "/v1/providers/{provider}/entitlements/{entitlement}",
            get(get_entitlement)
                .patch(patch_entitlement)
                .post(entitlement_action),
        )
        .route(
            "/v1/projects/{project}/subscriptions/{action}",
            post(subscription_action),
        )
        .route("/v1/services/{action}", post(service_action))
        .route("/token", post(token))
        .route("/oauth2/v3/certs", get(oidc_keys))
        .route("/robot/v1/metadata/jwk/{account}", get(signup_keys))
        .layer(axum::middleware::from_fn_with_state(
            state.observed.clone(),
            observe,
        ))
        .with_state(state)
}

fn error_response(error: &ApiError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, Json(error.body())).into_response()
}

fn ok_json(value: Value) -> Response {
    (StatusCode::OK, Json(value)).into_response()
}

/// Checks the bearer token and the provider in the path.
fn authorize(
    state: &SimState,
    headers: &HeaderMap,
    provider: Option<&str>,
) -> Result<(), ApiError> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !state.token_is_valid(token) {
        return Err(ApiError::new(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        ));
    }
    if let Some(provider) = provider
        && provider != state.provider_id
    {
        return Err(ApiError::new(
            403,
            "PERMISSION_DENIED",
            "The caller does not have permission.",
        ));
    }
    Ok(())
}

fn body_json(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|_| ApiError::invalid("Invalid JSON payload received."))
}

fn split_action(segment: &str) -> (&str, Option<&str>) {
    match segment.split_once(':') {
        Some((id, action)) => (id, Some(action)),
        None => (segment, None),
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(default, rename = "pageSize")]
    page_size: Option<usize>,
    #[serde(default, rename = "pageToken")]
    page_token: Option<String>,
    #[serde(default)]
    filter: Option<String>,
}

fn page<T: Clone>(items: &[T], query: &ListQuery, default_size: usize) -> (Vec<T>, Option<String>) {
    let size = query.page_size.unwrap_or(default_size).clamp(1, 200);
    let start: usize = query
        .page_token
        .as_deref()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let end = (start + size).min(items.len());
    let slice = items.get(start..end).unwrap_or_default().to_vec();
    let next = (end < items.len()).then(|| end.to_string());
    (slice, next)
}

async fn list_accounts(
    State(state): Shared,
    Path(provider): Path<String>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(error) = authorize(&state, &headers, Some(&provider)) {
        return error_response(&error);
    }
    let world = state.world();
    let all: Vec<Value> = world
        .accounts
        .values()
        .map(|a| world.account_json(a))
        .collect();
    let (accounts, next) = page(&all, &query, 25);
    let mut body = json!({"accounts": accounts});
    if let Some(next) = next {
        body["nextPageToken"] = json!(next);
    }
    ok_json(body)
}

async fn get_account(
    State(state): Shared,
    Path((provider, account)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(error) = authorize(&state, &headers, Some(&provider)) {
        return error_response(&error);
    }
    let world = state.world();
    match world.accounts.get(&account) {
        Some(found) => ok_json(world.account_json(found)),
        None => error_response(&ApiError::not_found("Account")),
    }
}

async fn account_action(
    State(state): Shared,
    Path((provider, segment)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(error) = authorize(&state, &headers, Some(&provider)) {
        return error_response(&error);
    }
    let body = match body_json(&body) {
        Ok(body) => body,
        Err(error) => return error_response(&error),
    };
    let (account, action) = split_action(&segment);
    let now = state.now();
    let result = state.change_world(|world| match action {
        Some("approve") => world.approve_account(now, account, body["approvalName"].as_str()),
        Some("reject") => {
            world.reject_account(now, account, body["reason"].as_str().unwrap_or_default())
        }
        Some("reset") => world.reset_account(now, account),
        _ => Err(ApiError::new(404, "NOT_FOUND", "Unknown method.")),
    });
    match result {
        Ok(()) => ok_json(json!({})),
        Err(error) => error_response(&error),
    }
}

async fn list_entitlements(
    State(state): Shared,
    Path(provider): Path<String>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(error) = authorize(&state, &headers, Some(&provider)) {
        return error_response(&error);
    }
    let world = state.world();
    let matching = match world.filter_entitlements(query.filter.as_deref().unwrap_or_default()) {
        Ok(matching) => matching,
        Err(error) => return error_response(&error),
    };
    let all: Vec<Value> = matching
        .into_iter()
        .map(|e| world.entitlement_json(e))
        .collect();
    let (entitlements, next) = page(&all, &query, 200);
    let mut body = json!({"entitlements": entitlements});
    if let Some(next) = next {
        body["nextPageToken"] = json!(next);
    }
    ok_json(body)
}

async fn get_entitlement(
    State(state): Shared,
    Path((provider, entitlement)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(error) = authorize(&state, &headers, Some(&provider)) {
        return error_response(&error);
    }
    let world = state.world();
    match world.entitlements.get(&entitlement) {
        Some(found) => ok_json(world.entitlement_json(found)),
        None => error_response(&ApiError::not_found("Entitlement")),
    }
}

#[derive(Debug, Deserialize)]
struct PatchQuery {
    #[serde(default, rename = "updateMask")]
    update_mask: Option<String>,
}

async fn patch_entitlement(
    State(state): Shared,
    Path((provider, entitlement)): Path<(String, String)>,
    Query(query): Query<PatchQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(error) = authorize(&state, &headers, Some(&provider)) {
        return error_response(&error);
    }
    if query.update_mask.as_deref() != Some("messageToUser") {
        return error_response(&ApiError::invalid("Only messageToUser can be updated."));
    }
    let body = match body_json(&body) {
        Ok(body) => body,
        Err(error) => return error_response(&error),
    };
    let message = body["messageToUser"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let now = state.now();
    match state.change_world(|world| world.set_message_to_user(now, &entitlement, &message)) {
        Ok(value) => ok_json(value),
        Err(error) => error_response(&error),
    }
}

async fn entitlement_action(
    State(state): Shared,
    Path((provider, segment)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(error) = authorize(&state, &headers, Some(&provider)) {
        return error_response(&error);
    }
    let body = match body_json(&body) {
        Ok(body) => body,
        Err(error) => return error_response(&error),
    };
    let (entitlement, action) = split_action(&segment);
    let pending_plan = body["pendingPlanName"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let now = state.now();
    let result = state.change_world(|world| match action {
        Some("approve") => world.approve_entitlement(now, entitlement),
        Some("reject") => world.reject_entitlement(entitlement),
        Some("approvePlanChange") if pending_plan.is_empty() => {
            Err(ApiError::invalid("pendingPlanName is required."))
        }
        Some("approvePlanChange") => world.approve_plan_change(now, entitlement, &pending_plan),
        Some("rejectPlanChange") if pending_plan.is_empty() => {
            Err(ApiError::invalid("pendingPlanName is required."))
        }
        Some("rejectPlanChange") => world.reject_plan_change(now, entitlement, &pending_plan),
        Some("suspend") => Err(ApiError::new(
            501,
            "UNIMPLEMENTED",
            "This is not yet supported.",
        )),
        _ => Err(ApiError::new(404, "NOT_FOUND", "Unknown method.")),
    });
    match result {
        Ok(()) => ok_json(json!({})),
        Err(error) => error_response(&error),
    }
}

async fn subscription_action(
    State(state): Shared,
    Path((project, segment)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(error) = authorize(&state, &headers, None) {
        return error_response(&error);
    }
    let (subscription, action) = split_action(&segment);
    if format!("projects/{project}/subscriptions/{subscription}") != state.pull_subscription {
        return error_response(&ApiError::not_found("Subscription"));
    }
    let body = match body_json(&body) {
        Ok(body) => body,
        Err(error) => return error_response(&error),
    };
    let ack_ids: Vec<String> = body["ackIds"]
        .as_array()
        .map(|ids| {
            ids.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let now = state.now();
    let mut topic = state.topic();
    match action {
        Some("pull") => {
            let max = body["maxMessages"].as_u64().unwrap_or(0);
            if max == 0 {
                return error_response(&ApiError::invalid("maxMessages must be positive."));
            }
            let received = topic.pull(max as usize, now);
            if received.is_empty() {
                return ok_json(json!({}));
            }
            ok_json(json!({"receivedMessages": received}))
        }
        Some("acknowledge") => {
            if ack_ids.is_empty() {
                return error_response(&ApiError::invalid("ackIds must not be empty."));
            }
            topic.acknowledge(&ack_ids);
            ok_json(json!({}))
        }
        Some("modifyAckDeadline") => {
            let seconds = body["ackDeadlineSeconds"].as_i64().unwrap_or(-1);
            if ack_ids.is_empty() || !(0..=600).contains(&seconds) {
                return error_response(&ApiError::invalid(
                    "ackIds and an ackDeadlineSeconds of 0 to 600 are required.",
                ));
            }
            topic.modify_ack_deadline(&ack_ids, seconds, now);
            ok_json(json!({}))
        }
        _ => error_response(&ApiError::new(404, "NOT_FOUND", "Unknown method.")),
    }
}

async fn service_action(
    State(state): Shared,
    Path(segment): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(error) = authorize(&state, &headers, None) {
        return error_response(&error);
    }
    if state.service_control_down() {
        return error_response(&ApiError::new(
            503,
            "UNAVAILABLE",
            "The service is currently unavailable.",
        ));
    }
    let (service, action) = split_action(&segment);
    if service != state.service_name {
        return error_response(&ApiError::new(
            403,
            "PERMISSION_DENIED",
            "The caller does not have permission for this service.",
        ));
    }
    let body = match body_json(&body) {
        Ok(body) => body,
        Err(error) => return error_response(&error),
    };
    let result = match action {
        Some("check") => state.service_check(&body),
        Some("report") => state.service_report(&body),
        _ => Err(ApiError::new(404, "NOT_FOUND", "Unknown method.")),
    };
    match result {
        Ok(value) => ok_json(value),
        Err(error) => error_response(&error),
    }
}

fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct AssertionClaims {
    iss: String,
    #[serde(default)]
    scope: String,
    aud: String,
    exp: i64,
}

async fn token(State(state): Shared, Form(form): Form<HashMap<String, String>>) -> Response {
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return oauth_error("unsupported_grant_type", "Invalid grant_type.");
    }
    let Some(assertion) = form.get("assertion") else {
        return oauth_error("invalid_request", "Missing required parameter: assertion");
    };
    let jwk = state.keys.service_account.jwk();
    let key = match DecodingKey::from_rsa_components(
        jwk["n"].as_str().unwrap_or_default(),
        jwk["e"].as_str().unwrap_or_default(),
    ) {
        Ok(key) => key,
        Err(_) => return oauth_error("internal_failure", "Key unavailable."),
    };
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = match jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &validation) {
        Ok(data) => data.claims,
        Err(_) => return oauth_error("invalid_grant", "Invalid JWT Signature."),
    };
    if claims.iss != state.service_account_email {
        return oauth_error("invalid_grant", "Invalid issuer.");
    }
    if claims.aud != state.token_url() {
        return oauth_error("invalid_grant", "Invalid JWT audience.");
    }
    if claims.exp < state.now().timestamp() {
        return oauth_error(
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token.",
        );
    }
    if !claims
        .scope
        .split_whitespace()
        .any(|s| s == "https://www.googleapis.com/auth/cloud-platform")
    {
        return oauth_error("invalid_scope", "Invalid OAuth scope.");
    }
    let access_token = state.issue_access_token();
    ok_json(json!({"access_token": access_token, "expires_in": 3599, "token_type": "Bearer"}))
}

async fn oidc_keys(State(state): Shared) -> Response {
    ok_json(jwks(&[&state.keys.push_oidc]))
}

async fn signup_keys(State(state): Shared) -> Response {
    ok_json(jwks(&[&state.keys.signup]))
}
