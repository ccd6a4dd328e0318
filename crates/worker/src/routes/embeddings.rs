//! `GET /v1/embeddings`: the textual-inversion embeddings prompts may name.

use axum::extract::State;
use axum::Json;
use sd_contract::{EmbeddingList, ErrorBody};

use crate::state::AppState;

/// The embeddings in the worker's `--embeddings-dir` that the model can use,
/// by their trigger words, and the files skipped with the reason (empty
/// without a directory).
#[utoipa::path(
    get,
    path = "/v1/embeddings",
    tag = "worker",
    responses((status = 200, description = "The embeddings", body = EmbeddingList), (status = 401, description = "Missing or wrong API key", body = ErrorBody)),
    security((), ("api_key" = []))
)]
pub async fn list_embeddings(State(state): State<AppState>) -> Json<EmbeddingList> {
    Json(
        state
            .config()
            .embeddings
            .as_ref()
            .map(|dir| dir.list())
            .unwrap_or(EmbeddingList {
                embeddings: Vec::new(),
                skipped: Vec::new(),
            }),
    )
}
