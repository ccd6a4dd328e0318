//! `GET /v1/loras`: the LoRA adapters jobs may name.

use axum::extract::State;
use axum::Json;
use sd_contract::{ErrorBody, LoraList};

use crate::error::ApiError;
use crate::state::AppState;

/// The `.safetensors` files in the worker's `--lora-dir`, by the names jobs
/// give as `loras[].path`, with each one's layout and targets (empty without a directory).
#[utoipa::path(
    get,
    path = "/v1/loras",
    tag = "worker",
    responses((status = 200, description = "The LoRA adapters", body = LoraList), (status = 401, description = "Missing or wrong API key", body = ErrorBody)),
    security((), ("api_key" = []))
)]
pub async fn list_loras(State(state): State<AppState>) -> Result<Json<LoraList>, ApiError> {
    let dir = state.config().lora_dir.clone();
    let loras = tokio::task::spawn_blocking(move || dir.map(|d| d.list()).unwrap_or_default())
        .await
        .map_err(|e| ApiError::Internal(format!("listing the LoRA directory: {e}")))?;
    Ok(Json(LoraList { loras }))
}
