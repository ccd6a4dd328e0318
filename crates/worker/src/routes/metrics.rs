//! `GET /metrics`: the worker's metrics in Prometheus' text format, behind
//! the API key unless the worker runs with `--metrics-public`.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::metrics::CONTENT_TYPE;
use crate::state::AppState;

/// Jobs by outcome, queue depth, job, queue-wait and step latency
/// histograms, images made, model load time and readiness.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses(
        (status = 200, description = "Prometheus' text exposition format (version 0.0.4)",
            content_type = "text/plain", body = String),
        (status = 401, description = "Missing or wrong API key (unless `--metrics-public`)",
            body = sd_contract::ErrorBody),
    ),
    security((), ("api_key" = []))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.render_metrics(),
    )
}
