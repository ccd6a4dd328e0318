//! `POST /v1/jobs`, `GET /v1/jobs`, `GET /v1/jobs/{id}` and `DELETE /v1/jobs/{id}`.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::Json;
use sd_contract::{ErrorBody, JobCreated, JobList, JobRequest, JobStatus};

use crate::error::ApiError;
use crate::extract::{JobBody, JobId};
use crate::state::AppState;
use crate::validation::validate;

/// Submits a job.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    request_body = JobRequest,
    responses(
        (status = 202, description = "Queued; follow `sse_url`", body = JobCreated,
            headers(("Warning" = String, description = "When the body has fields the API does not know \
                (ignored): `299 sd-worker \"unknown fields ignored: a, loras[0].b\"`"))),
        (status = 400, description = "Malformed JSON, unknown operation, a bad field, or (with \
            `--strict`) an unknown one", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 408, description = "Body not received within the body timeout", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
        (status = 403, description = "Host or Origin not served", body = ErrorBody),
        (status = 415, description = "Body not sent as JSON (`Content-Type: application/json` \
            is required)", body = ErrorBody),
        (status = 503, description = "Queue full, model not ready, shutting down, or the shared \
            queue (Redis) unreachable",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying")),
            body = ErrorBody),
    ),
    security((), ("api_key" = []))
)]
pub async fn create_job(
    State(state): State<AppState>,
    JobBody {
        request,
        unknown_fields,
    }: JobBody,
) -> Result<(StatusCode, HeaderMap, Json<JobCreated>), ApiError> {
    let (model, defaults) = state.serving_model()?;
    let limits = state.limits();
    let lora_dir = state.config().lora_dir.clone();
    // Decoding pictures is CPU work: keep it off the threads that serve streams.
    let (request, job) = tokio::task::spawn_blocking(move || {
        let job = validate(
            request.clone(),
            &model,
            &defaults,
            &limits,
            lora_dir.as_ref(),
        );
        job.map(|job| (request, job))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("validating the request: {e}")))??;
    let id = state.submit_job(request, job).await?;
    let mut headers = HeaderMap::new();
    if !unknown_fields.is_empty() {
        tracing::info!(job_id = %id, fields = ?unknown_fields, "ignored unknown request fields");
        headers.insert(header::WARNING, unknown_fields_warning(&unknown_fields));
    }
    Ok((StatusCode::ACCEPTED, headers, Json(JobCreated::new(&id))))
}

/// The `Warning` header (RFC 7234's code 299, "miscellaneous persistent
/// warning") naming the ignored fields, each cut to 64 characters and made
/// printable ASCII, at most 16 of them.
fn unknown_fields_warning(fields: &[String]) -> HeaderValue {
    let shown: Vec<String> = fields
        .iter()
        .take(16)
        .map(|field| {
            field
                .chars()
                .take(64)
                .map(|c| match c {
                    ' '..='~' if c != '"' && c != '\\' => c,
                    _ => '?',
                })
                .collect()
        })
        .collect();
    let more = fields.len().saturating_sub(shown.len());
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    let text = format!(
        "299 sd-worker \"unknown fields ignored: {}{more}\"",
        shown.join(", ")
    );
    HeaderValue::from_str(&text)
        .unwrap_or_else(|_| HeaderValue::from_static("299 sd-worker \"unknown fields ignored\""))
}

/// The jobs the worker holds: the running one, the queue in order (the
/// first 100; `queued` counts them all), then the newest finished ones (at
/// most 32), each with its state and parameters but no image, for a page
/// that shows the queue.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    responses(
        (status = 200, description = "The jobs", body = JobList),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
    ),
    security((), ("api_key" = []))
)]
pub async fn list_jobs(State(state): State<AppState>) -> Json<JobList> {
    Json(state.list())
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
        (status = 400, description = "An id that is not UTF-8 once percent-decoded", body = ErrorBody),
        (status = 404, description = "Unknown or expired job", body = ErrorBody),
    ),
    security((), ("api_key" = []))
)]
pub async fn get_job(
    State(state): State<AppState>,
    JobId(id): JobId,
) -> Result<Json<JobStatus>, ApiError> {
    state.job_status(&id).await.map(Json)
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
        (status = 400, description = "An id that is not UTF-8 once percent-decoded", body = ErrorBody),
        (status = 404, description = "Unknown or expired job", body = ErrorBody),
        (status = 409, description = "The job has already ended", body = ErrorBody),
    ),
    security((), ("api_key" = []))
)]
pub async fn cancel_job(
    State(state): State<AppState>,
    JobId(id): JobId,
) -> Result<(StatusCode, Json<JobStatus>), ApiError> {
    let (code, status) = state.cancel_job(&id).await?;
    Ok((code, Json(status)))
}
