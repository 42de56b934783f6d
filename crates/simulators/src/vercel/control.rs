//! The simulator's own controls (`/_sim/...`), for trying marketbridge by
//! hand with `curl`: create an installation, mint tokens, start SSO, look at
//! what Vercel received. Not part of Vercel's API, and not recorded.

use super::tokens::{SimUser, TokenSpec};
use super::{InstallationHandle, Shared};
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::sync::Arc;

/// The controls, over a handle to the simulator.
pub(crate) fn routes(simulator: Arc<Shared>) -> Router {
    Router::new()
        .route("/_sim/installations", post(create_installation))
        .route("/_sim/installations/{id}", get(installation))
        .route("/_sim/tokens", post(token))
        .route("/_sim/sso", post(sso))
        .route("/_sim/import", post(import))
        .route(
            "/sso/integrations/{slug}/{installation_id}",
            get(provider_initiated_sso),
        )
        .with_state(simulator)
}

fn handle_of(simulator: &Shared, id: &str) -> Option<InstallationHandle> {
    simulator
        .installation(id)
        .map(|installation| InstallationHandle {
            id: installation.id,
            team_id: installation.team_id,
            token: installation.token,
        })
}

fn body_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|_| json!({}))
}

fn unknown_installation() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(
            json!({"error": "no such installation; create one with POST /_sim/installations"}),
        ),
    )
        .into_response()
}

async fn create_installation(State(simulator): State<Arc<Shared>>) -> Response {
    let handle = simulator.new_installation();
    axum::Json(json!({
        "installationId": handle.id,
        "teamId": handle.team_id,
        "accessToken": handle.token,
        "adminToken": simulator.token(&TokenSpec::user(&handle.id, &handle.team_id, SimUser::admin())),
        "viewerToken": simulator.token(&TokenSpec::user(&handle.id, &handle.team_id, SimUser::viewer())),
        "systemToken": simulator.token(&TokenSpec::system(Some(&handle.id), Some(&handle.team_id))),
        "upsertBody": handle.upsert_body(),
    }))
    .into_response()
}

async fn installation(State(simulator): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let Some(installation) = simulator.installation(&id) else {
        return unknown_installation();
    };
    let resources: Vec<Value> = installation
        .resources
        .values()
        .map(|r| {
            json!({
                "id": r.id, "productId": r.product_id, "name": r.name, "status": r.status,
                "notification": r.notification, "secretNames": r.secrets.iter().map(|s| s["name"].clone()).collect::<Vec<_>>(),
                "secretPushes": r.secret_pushes.len(), "updates": r.updates.len(), "deleted": r.deleted,
            })
        })
        .collect();
    let invoices: Vec<Value> = installation
        .invoices
        .values()
        .map(|i| i.to_json())
        .collect();
    axum::Json(json!({
        "installationId": installation.id,
        "teamId": installation.team_id,
        "finalized": installation.finalized,
        "resources": resources,
        "events": installation.events,
        "installationUpdates": installation.updates,
        "billingData": installation.billing_data.len(),
        "invoices": invoices,
        "balances": installation.balances,
    }))
    .into_response()
}

/// `{"installationId"?, "role"?: "ADMIN"|"USER"}`: a user token with a
/// role, a system token without.
async fn token(State(simulator): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let body = body_of(&body);
    let installation = match body["installationId"].as_str() {
        Some(id) => match handle_of(&simulator, id) {
            Some(handle) => Some(handle),
            None => return unknown_installation(),
        },
        None => None,
    };
    let token = match (body["role"].as_str(), &installation) {
        (Some(role), Some(handle)) => simulator.token(&TokenSpec::user(
            &handle.id,
            &handle.team_id,
            SimUser::new(role),
        )),
        (Some(_), None) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "a user token needs an installationId"})),
            )
                .into_response();
        }
        (None, handle) => simulator.token(&TokenSpec::system(
            handle.as_ref().map(|h| h.id.as_str()),
            handle.as_ref().map(|h| h.team_id.as_str()),
        )),
    };
    axum::Json(json!({ "token": token })).into_response()
}

/// `{"installationId", "redirectLoginUrl", "resourceId"?, "invoiceId"?,
/// "path"?}`: the URL Vercel would send the browser to.
async fn sso(State(simulator): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let body = body_of(&body);
    let Some(handle) = body["installationId"]
        .as_str()
        .and_then(|id| handle_of(&simulator, id))
    else {
        return unknown_installation();
    };
    let Some(redirect) = body["redirectLoginUrl"]
        .as_str()
        .filter(|u| reqwest::Url::parse(u).is_ok())
    else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "redirectLoginUrl must be a URL"})),
        )
            .into_response();
    };
    let code = simulator.issue_sso_code(&handle, &SimUser::admin());
    let mut context = Vec::new();
    for (field, parameter) in [
        ("resourceId", "resource_id"),
        ("invoiceId", "invoice_id"),
        ("path", "path"),
    ] {
        if let Some(value) = body[field].as_str() {
            context.push((parameter, value));
        }
    }
    let url = super::redirect_url(redirect, &code, &context);
    axum::Json(json!({ "url": url })).into_response()
}

/// `GET /sso/integrations/{slug}/{installationId}?{query}`: provider-
/// initiated sign-in, as the Vercel dashboard answers it for a signed-in
/// team admin: a 302 to the integration's Redirect Login URL with a fresh
/// code, the query passed along.
async fn provider_initiated_sso(
    State(simulator): State<Arc<Shared>>,
    Path((_slug, installation_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(handle) = handle_of(&simulator, &installation_id) else {
        return unknown_installation();
    };
    let Some(redirect) = simulator.world().redirect_login_url.clone() else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "the integration has no Redirect Login URL"})),
        )
            .into_response();
    };
    let code = simulator.issue_sso_code(&handle, &SimUser::admin());
    let context: Vec<(String, String)> =
        reqwest::Url::parse(&format!("http://query/?{}", query.unwrap_or_default()))
            .map(|url| url.query_pairs().into_owned().collect())
            .unwrap_or_default();
    let context: Vec<(&str, &str)> = context
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let target = super::redirect_url(&redirect, &code, &context);
    (StatusCode::FOUND, [(axum::http::header::LOCATION, target)]).into_response()
}

/// `{"installationId", "importUrl", "productId"?}`: the Import Resource URL
/// Vercel would send the browser to, with a fresh `state` and `return`.
async fn import(State(simulator): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let body = body_of(&body);
    let Some(handle) = body["installationId"]
        .as_str()
        .and_then(|id| handle_of(&simulator, id))
    else {
        return unknown_installation();
    };
    let Some(import_url) = body["importUrl"]
        .as_str()
        .filter(|u| reqwest::Url::parse(u).is_ok())
    else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "importUrl must be a URL"})),
        )
            .into_response();
    };
    let (url, state) = super::start_import_with(
        &simulator,
        import_url,
        &handle.id,
        body["productId"].as_str(),
    );
    axum::Json(json!({ "url": url, "state": state })).into_response()
}
