//! `GET /health` and `GET /ready`; neither needs the API key.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use sd_contract::{Health, Readiness};

use crate::auth::has_valid_key;
use crate::state::AppState;

/// The process is up: 200 as soon as the port is bound.
#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, description = "Up", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// The model is loaded: 200 when jobs are accepted, 503 while loading, after
/// a failed load (with the error) and while shutting down. The error's
/// absolute paths are redacted unless the request carries the API key.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "health",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Loading, failed or stopping; a failed load's absolute \
            paths are shown only with `Authorization: Bearer <api key>`", body = Readiness),
    )
)]
pub async fn ready(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> (StatusCode, Json<Readiness>) {
    let (status, body) = state.readiness(has_valid_key(&state, &headers));
    (status, Json(body))
}
