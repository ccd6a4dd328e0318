//! `GET /v1/info`.

use axum::extract::State;
use axum::Json;
use sd_contract::{ErrorBody, WorkerInfo};

use crate::state::AppState;

/// The worker, its model, the defaults and limits for requests, and its queue.
#[utoipa::path(
    get,
    path = "/v1/info",
    tag = "worker",
    responses((status = 200, description = "The worker", body = WorkerInfo), (status = 401, description = "Missing or wrong API key", body = ErrorBody)),
    security((), ("api_key" = []))
)]
pub async fn info(State(state): State<AppState>) -> Json<WorkerInfo> {
    Json(state.info())
}
