//! Liveness and readiness. Metrics are not served here: the public port
//! would let anyone read them; they have their own internal listener
//! (`gateway.metrics_listen`).

use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// `/healthz` and `/readyz`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "The process is up", body = Object, example = json!({"status": "ok"})))
)]
async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready only when every service reports SERVING.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Every service is SERVING", body = Object, example = json!({"status": "ready"})),
        (status = 503, description = "Some service is not SERVING", body = Object, example = json!({"status": "unavailable", "failing": ["billing"]})),
    )
)]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let failing = state.clients.unhealthy().await;
    if failing.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "failing": failing})),
        )
    }
}
