//! Submitting jobs and waiting for their images, for the APIs whose calls
//! answer only once the images are made (OpenAI's, AUTOMATIC1111's).
//!
//! The jobs are ordinary ones: validated the same way, queued behind the
//! others, listed by the job API, followed by any stream and cancellable.
//! Several images are several jobs, with the seeds seed, seed + 1, … (as
//! A1111 numbers a batch's seeds). If the caller goes away before they end
//! (the HTTP connection closes and the handler's future is dropped), the jobs
//! that have not ended are cancelled: nobody is left to receive their images.

use std::sync::Arc;

use sd_contract::{JobEvent, JobRequest};
use sd_core::pipeline::random_seed;

use crate::error::ApiError;
use crate::jobs::Job;
use crate::state::AppState;
use crate::validation::validate;

/// One submitted job and how it ended.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The job, still known to the job API for its retention period.
    pub job: Arc<Job>,
    /// Its terminal event: `complete`, `error` or `cancelled`.
    pub end: Arc<JobEvent>,
}

/// Validates and queues `count` copies of `request` (seeds `seed`, `seed + 1`,
/// …; a random first seed when the request has none), then waits for every
/// one to end. Nothing is queued unless every copy is valid and fits in the
/// queue; if a later one is refused, the earlier ones are cancelled.
pub async fn submit_and_wait(
    state: &AppState,
    request: JobRequest,
    count: u32,
) -> Result<Vec<Finished>, ApiError> {
    let jobs = submit_all(state, request, count).await?;
    let mut guard = CancelOnDrop {
        state: state.clone(),
        jobs,
    };
    let mut finished = Vec::with_capacity(guard.jobs.len());
    for job in &guard.jobs {
        let end = job.ended().await;
        finished.push(Finished {
            job: Arc::clone(job),
            end,
        });
    }
    guard.jobs.clear();
    Ok(finished)
}

async fn submit_all(
    state: &AppState,
    request: JobRequest,
    count: u32,
) -> Result<Vec<Arc<Job>>, ApiError> {
    let (model, defaults) = state.serving_model()?;
    let limits = state.limits();
    let lora_dir = state.config().lora_dir.clone();
    let first_seed = request.generation().seed.unwrap_or_else(random_seed);
    // Decoding pictures is CPU work: keep it off the threads that serve streams.
    let valid = tokio::task::spawn_blocking(move || {
        (0..u64::from(count.max(1)))
            .map(|i| {
                let mut copy = request.clone();
                copy.generation_mut().seed = Some(first_seed.wrapping_add(i));
                validate(copy, &model, &defaults, &limits, lora_dir.as_ref())
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ApiError::Internal(format!("validating the request: {e}")))??;
    let mut jobs = Vec::with_capacity(valid.len());
    for job in valid {
        match state.submit(job) {
            Ok(job) => jobs.push(job),
            Err(err) => {
                for queued in &jobs {
                    let _ = state.cancel(queued.id());
                }
                return Err(err);
            }
        }
    }
    Ok(jobs)
}

/// Cancels the jobs that have not ended when the waiting caller goes away
/// (a queued one leaves the queue at once, a running one stops mid-step).
struct CancelOnDrop {
    state: AppState,
    jobs: Vec<Arc<Job>>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        for job in &self.jobs {
            if !job.state().is_terminal() {
                tracing::info!(job = job.id(), "the caller went away: cancelling");
                let _ = self.state.cancel(job.id());
            }
        }
    }
}
