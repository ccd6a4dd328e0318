//! `POST /v1/jobs`, `GET /v1/jobs/{id}` and `DELETE /v1/jobs/{id}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use sd_contract::{ErrorBody, JobCreated, JobRequest, JobStatus};

use crate::error::ApiError;
use crate::extract::JobBody;
use crate::state::AppState;
use crate::validation::validate;

/// Submits a job.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    request_body = JobRequest,
    responses(
        (status = 202, description = "Queued; follow `sse_url`", body = JobCreated),
        (status = 400, description = "Malformed JSON, unknown operation or a bad field", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 408, description = "Body not received within the body timeout", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
        (status = 415, description = "Body not sent as JSON", body = ErrorBody),
        (status = 503, description = "Queue full, model not ready, or shutting down",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying")),
            body = ErrorBody),
    ),
    security((), ("api_key" = []))
)]
pub async fn create_job(
    State(state): State<AppState>,
    JobBody(request): JobBody,
) -> Result<(StatusCode, Json<JobCreated>), ApiError> {
    let (model, defaults) = state.serving_model()?;
    let limits = state.limits();
    // Decoding pictures is CPU work: keep it off the threads that serve streams.
    let job = tokio::task::spawn_blocking(move || validate(request, &model, &defaults, &limits))
        .await
        .map_err(|e| ApiError::Internal(format!("validating the request: {e}")))??;
    let job = state.submit(job)?;
    Ok((StatusCode::ACCEPTED, Json(JobCreated::new(job.id()))))
}

/// A job's state, progress and, once it ended, its image or error.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The job", body = JobStatus),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "Unknown or expired job", body = ErrorBody),
    ),
    security((), ("api_key" = []))
)]
pub async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobStatus>, ApiError> {
    state.status(&id).map(Json)
}

/// Cancels a job: a queued one at once, a running one within a denoising step.
#[utoipa::path(
    delete,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "Cancelled", body = JobStatus),
        (status = 202, description = "Running; it stops after the current step", body = JobStatus),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "Unknown or expired job", body = ErrorBody),
        (status = 409, description = "The job has already ended", body = ErrorBody),
    ),
    security((), ("api_key" = []))
)]
pub async fn cancel_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<JobStatus>), ApiError> {
    let (code, status) = state.cancel(&id)?;
    Ok((code, Json(status)))
}
