//! The HTTP APIs the simulator serves: Entra's client-credentials endpoint
//! (v1 and v2), the tenant's OpenID configuration and keys, the SaaS
//! Fulfillment API v2 and the metering API under `/api`, and `/_sim`
//! controls for people trying the flow. Every request is recorded and may
//! be failed on demand (see [`crate::common::observe`]).

use super::SimState;
use super::world::ApiError;
use crate::common::{jwks, observe};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

type Shared = State<Arc<SimState>>;

/// Every route.
pub(crate) fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/token", post(token))
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route(
            "/{tenant}/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(keys))
        .route("/api/saas/subscriptions/resolve", post(resolve))
        .route("/api/saas/subscriptions", get(list_subscriptions))
        .route(
            "/api/saas/subscriptions/{id}",
            get(get_subscription)
                .patch(patch_subscription)
                .delete(delete_subscription),
        )
        .route("/api/saas/subscriptions/{id}/activate", post(activate))
        .route(
            "/api/saas/subscriptions/{id}/listAvailablePlans",
            get(available_plans),
        )
        .route(
            "/api/saas/subscriptions/{id}/operations",
            get(list_operations),
        )
        .route(
            "/api/saas/subscriptions/{id}/operations/{operation}",
            get(get_operation).patch(patch_operation),
        )
        .route("/api/usageEvent", post(usage_event))
        .route("/api/batchUsageEvent", post(batch_usage_event))
        .route("/_sim/purchase", post(sim_purchase))
        .route("/_sim/subscriptions", get(sim_subscriptions))
        .route("/_sim/subscriptions/{id}/{action}", post(sim_action))
        .route("/_sim/webhooks/deliver", post(sim_deliver))
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

/// Echoes (or makes up) the request and correlation ids, as Microsoft does.
fn with_ids(headers: &HeaderMap, mut response: Response) -> Response {
    for name in ["x-ms-requestid", "x-ms-correlationid"] {
        let value = headers
            .get(name)
            .cloned()
            .or_else(|| HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).ok());
        if let Some(value) = value {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// The checks every Fulfillment and metering call passes: the API version
/// and a bearer token Entra issued to our app for the Marketplace resource.
fn preamble(
    state: &SimState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<(), Box<Response>> {
    match query.get("api-version").map(String::as_str) {
        Some(super::API_VERSION) => {}
        None => {
            return Err(Box::new((
                StatusCode::BAD_REQUEST,
                Json(json!({"Error": {"Code": "ApiVersionUnspecified", "Message": "api-version is required"}})),
            )
                .into_response()));
        }
        Some(_) => {
            return Err(Box::new((
                StatusCode::BAD_REQUEST,
                Json(json!({"Error": {"Code": "UnsupportedApiVersion", "Message": "unsupported api-version"}})),
            )
                .into_response()));
        }
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !state.access_token_valid(token) {
        return Err(Box::new((
            StatusCode::UNAUTHORIZED,
            Json(json!({"code": "Unauthorized", "message": "the access token is missing, expired or not for this resource"})),
        )
            .into_response()));
    }
    Ok(())
}

macro_rules! guard {
    ($state:expr, $headers:expr, $query:expr) => {
        if let Err(response) = preamble(&$state, &$headers, &$query) {
            return with_ids(&$headers, *response);
        }
    };
}

async fn token(
    State(state): Shared,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    if tenant != state.tenant_id {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_tenant", "error_description": "AADSTS90002: tenant not found"})),
        )
            .into_response();
    }
    if get("grant_type") != "client_credentials" {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "unsupported_grant_type"})),
        )
            .into_response();
    }
    if get("client_id") != state.client_id || get("client_secret") != state.client_secret {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."})),
        )
            .into_response();
    }
    let resource = form
        .get("resource")
        .cloned()
        .or_else(|| {
            form.get("scope")
                .map(|s| s.trim_end_matches("/.default").to_owned())
        })
        .unwrap_or_default();
    if resource != super::MARKETPLACE_RESOURCE {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_resource", "error_description": "AADSTS500011: resource not found"})),
        )
            .into_response();
    }
    let (access_token, expires_on) = state.issue_access_token();
    if form.contains_key("resource") {
        // v1: numbers as strings.
        Json(json!({
            "token_type": "Bearer",
            "expires_in": "3599",
            "ext_expires_in": "3599",
            "expires_on": expires_on.to_string(),
            "not_before": (expires_on - 3600).to_string(),
            "resource": resource,
            "access_token": access_token,
        }))
        .into_response()
    } else {
        Json(json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": access_token}))
            .into_response()
    }
}

async fn openid_configuration(State(state): Shared, Path(tenant): Path<String>) -> Response {
    if tenant != state.tenant_id {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let base = state.base_url();
    Json(json!({
        "issuer": format!("https://sts.windows.net/{tenant}/"),
        "token_endpoint": format!("{base}/{tenant}/oauth2/token"),
        "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
    .into_response()
}

async fn keys(State(state): Shared) -> Response {
    Json(jwks(&[&state.keys.entra])).into_response()
}

async fn resolve(
    State(state): Shared,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    guard!(state, headers, query);
    let Some(token) = headers
        .get("x-ms-marketplace-token")
        .and_then(|v| v.to_str().ok())
    else {
        return with_ids(
            &headers,
            error_response(&ApiError::new(
                400,
                "HeaderNotPresent",
                "x-ms-marketplace-token is missing",
            )),
        );
    };
    let answer = state.world().resolve(token, state.now());
    with_ids(
        &headers,
        match answer {
            Ok(body) => Json(body).into_response(),
            Err(error) => error_response(&error),
        },
    )
}

async fn list_subscriptions(
    State(state): Shared,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    guard!(state, headers, query);
    // Pages of two, so callers must follow @nextLink.
    let world = state.world();
    let all: Vec<Value> = world
        .subscriptions
        .values()
        .map(|s| world.subscription_json(s))
        .collect();
    let start: usize = query
        .get("continuationToken")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let page: Vec<Value> = all.iter().skip(start).take(2).cloned().collect();
    let mut body = json!({"subscriptions": page});
    if start + 2 < all.len() {
        body["@nextLink"] = json!(format!(
            "{}/api/saas/subscriptions?continuationToken={}&api-version={}",
            state.base_url(),
            start + 2,
            super::API_VERSION
        ));
    }
    with_ids(&headers, Json(body).into_response())
}

async fn get_subscription(
    State(state): Shared,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    guard!(state, headers, query);
    let world = state.world();
    let response = match world.subscriptions.get(&id) {
        Some(s) => Json(world.subscription_json(s)).into_response(),
        None => error_response(&ApiError::new(
            404,
            "EntityNotFound",
            "subscription not found",
        )),
    };
    with_ids(&headers, response)
}

fn operation_location(state: &SimState, subscription_id: &str, operation_id: &str) -> String {
    format!(
        "{}/api/saas/subscriptions/{subscription_id}/operations/{operation_id}?api-version={}",
        state.base_url(),
        super::API_VERSION
    )
}

fn accepted(state: &SimState, subscription_id: &str, operation_id: &str) -> Response {
    let mut response = StatusCode::ACCEPTED.into_response();
    if let Ok(value) =
        HeaderValue::from_str(&operation_location(state, subscription_id, operation_id))
    {
        response.headers_mut().insert("operation-location", value);
    }
    if let Ok(value) = HeaderValue::from_str(operation_id) {
        response.headers_mut().insert("operation-id", value);
    }
    response
}

async fn patch_subscription(
    State(state): Shared,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    guard!(state, headers, query);
    let plan = body.get("planId").and_then(Value::as_str);
    let quantity = body.get("quantity").and_then(Value::as_u64);
    let changed = state
        .world()
        .change(&id, plan, quantity, "Partner", state.now());
    with_ids(
        &headers,
        match changed {
            Ok(operation_id) => accepted(&state, &id, &operation_id),
            Err(error) => error_response(&error),
        },
    )
}

async fn delete_subscription(
    State(state): Shared,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    guard!(state, headers, query);
    let deleted = state
        .world()
        .inform(&id, "Unsubscribe", "Partner", state.now());
    with_ids(
        &headers,
        match deleted {
            Ok(operation_id) => accepted(&state, &id, &operation_id),
            Err(error) => error_response(&error),
        },
    )
}

async fn activate(
    State(state): Shared,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    guard!(state, headers, query);
    let plan = body
        .get("planId")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let activated = state.world().activate(&id, plan, state.now());
    with_ids(
        &headers,
        match activated {
            Ok(()) => StatusCode::OK.into_response(),
            Err(error) => error_response(&error),
        },
    )
}

async fn available_plans(
    State(state): Shared,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    guard!(state, headers, query);
    let world = state.world();
    if !world.subscriptions.contains_key(&id) {
        return with_ids(
            &headers,
            error_response(&ApiError::new(
                404,
                "EntityNotFound",
                "subscription not found",
            )),
        );
    }
    let plans: Vec<Value> = world
        .plans
        .iter()
        .filter(|p| query.get("planId").is_none_or(|wanted| wanted == &p.id))
        .map(|p| json!({"planId": p.id, "displayName": p.name, "isPrivate": false, "isPricePerSeat": p.per_seat, "isStopSell": false, "hasFreeTrials": false, "market": "US"}))
        .collect();
    with_ids(&headers, Json(json!({"plans": plans})).into_response())
}

async fn list_operations(
    State(state): Shared,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    guard!(state, headers, query);
    let now = state.now();
    let mut world = state.world();
    world.settle_waiting(now, false);
    let operations: Vec<Value> = world
        .operations
        .iter()
        .filter(|o| o.subscription_id == id && o.status == "InProgress")
        .map(|o| world.operation_json(o))
        .collect();
    with_ids(
        &headers,
        Json(json!({"operations": operations})).into_response(),
    )
}

async fn get_operation(
    State(state): Shared,
    Path((id, operation_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    guard!(state, headers, query);
    let now = state.now();
    let mut world = state.world();
    world.settle_waiting(now, false);
    let response = match world
        .operation(&operation_id)
        .filter(|o| o.subscription_id == id)
    {
        Some(operation) => Json(world.operation_json(operation)).into_response(),
        None => error_response(&ApiError::new(404, "EntityNotFound", "operation not found")),
    };
    with_ids(&headers, response)
}

async fn patch_operation(
    State(state): Shared,
    Path((id, operation_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    guard!(state, headers, query);
    let decision = body
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let decided = state
        .world()
        .decide(&id, &operation_id, decision, state.now());
    with_ids(
        &headers,
        match decided {
            Ok(()) => StatusCode::OK.into_response(),
            Err(error) => error_response(&error),
        },
    )
}

async fn usage_event(
    State(state): Shared,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    Json(event): Json<Value>,
) -> Response {
    guard!(state, headers, query);
    if state.metering_down() {
        return with_ids(&headers, StatusCode::SERVICE_UNAVAILABLE.into_response());
    }
    let (status, result) = state.world().usage_event(&event, state.now());
    let response = match status.as_str() {
        "Accepted" => Json(result).into_response(),
        "Duplicate" => (
            StatusCode::CONFLICT,
            Json(json!({"additionalInfo": {"acceptedMessage": result}, "message": "This usage event already exist.", "code": "Conflict"})),
        )
            .into_response(),
        _ => (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": "One or more errors have occurred.", "target": "usageEventRequest", "details": [result["error"].clone()], "code": "BadArgument"})),
        )
            .into_response(),
    };
    with_ids(&headers, response)
}

async fn batch_usage_event(
    State(state): Shared,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    guard!(state, headers, query);
    if state.metering_down() {
        return with_ids(&headers, StatusCode::SERVICE_UNAVAILABLE.into_response());
    }
    let events = body
        .get("request")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if events.is_empty() || events.len() > 25 {
        return with_ids(
            &headers,
            error_response(&ApiError::new(
                400,
                "BadArgument",
                "a batch holds 1 to 25 events",
            )),
        );
    }
    let now = state.now();
    let mut world = state.world();
    let results: Vec<Value> = events
        .iter()
        .map(|event| world.usage_event(event, now).1)
        .collect();
    with_ids(
        &headers,
        Json(json!({"count": results.len(), "result": results})).into_response(),
    )
}

// ---- controls for people ---------------------------------------------------

async fn sim_purchase(State(state): Shared, Json(body): Json<Value>) -> Response {
    let plan = body
        .get("planId")
        .and_then(Value::as_str)
        .unwrap_or("database-free");
    let quantity = body.get("quantity").and_then(Value::as_u64);
    let email = body
        .get("email")
        .and_then(Value::as_str)
        .unwrap_or("buyer@contoso.example");
    match state.purchase(plan, quantity, email) {
        Ok(purchase) => Json(json!({
            "subscriptionId": purchase.subscription_id,
            "token": purchase.token,
            "landingUrl": purchase.landing_url,
        }))
        .into_response(),
        Err(error) => error_response(&error),
    }
}

async fn sim_subscriptions(State(state): Shared) -> Response {
    let world = state.world();
    let all: Vec<Value> = world
        .subscriptions
        .values()
        .map(|s| world.subscription_json(s))
        .collect();
    Json(json!({"subscriptions": all, "usage": world.usage.len()})).into_response()
}

async fn sim_action(
    State(state): Shared,
    Path((id, action)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> Response {
    let body = body.map(|Json(b)| b).unwrap_or(Value::Null);
    let now = state.now();
    let result = match action.as_str() {
        "changePlan" => state.world().change(
            &id,
            body.get("planId").and_then(Value::as_str),
            None,
            "Azure",
            now,
        ),
        "changeQuantity" => state.world().change(
            &id,
            None,
            body.get("quantity").and_then(Value::as_u64),
            "Azure",
            now,
        ),
        "suspend" => state.world().inform(&id, "Suspend", "Azure", now),
        "reinstate" => state.world().inform(&id, "Reinstate", "Azure", now),
        "unsubscribe" => state.world().inform(&id, "Unsubscribe", "Azure", now),
        "renew" => state.world().inform(&id, "Renew", "Azure", now),
        _ => Err(ApiError::new(404, "NotFound", "unknown action")),
    };
    match result {
        Ok(operation_id) => {
            state.queue_webhook(&operation_id);
            (
                StatusCode::ACCEPTED,
                Json(json!({"operationId": operation_id})),
            )
                .into_response()
        }
        Err(error) => error_response(&error),
    }
}

async fn sim_deliver(State(state): Shared) -> Response {
    let attempts = state.deliver_all().await;
    Json(json!({"delivered": attempts.len()})).into_response()
}
