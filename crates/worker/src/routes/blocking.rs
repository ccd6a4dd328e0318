//! Submitting jobs and waiting for their images, for the APIs whose calls
//! answer only once the images are made (OpenAI's, AUTOMATIC1111's).
//!
//! The jobs are ordinary ones: validated the same way, queued behind the
//! others, listed by the job API, followed by any stream and cancellable.
//! Several images are one job of `num_images` (batched through the UNet),
//! with the seeds seed, seed + 1, … (as A1111 numbers a batch's seeds, its
//! iterations continuing the count); more than a job's
//! [`MAX_NUM_IMAGES`] are several jobs of at most that many, the seeds
//! counting on from one to the next. If the caller goes away before they end
//! (the HTTP connection closes and the handler's future is dropped), the jobs
//! that have not ended are cancelled: nobody is left to receive their images.

use std::sync::Arc;

use sd_contract::limits::MAX_NUM_IMAGES;
use sd_contract::{JobEvent, JobRequest, JobState};
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

impl Finished {
    /// The images of a completed job, in order, each as its base64 PNG and
    /// seed; none for a job that failed or was cancelled.
    pub fn images(&self) -> Vec<(&str, u64)> {
        match self.end.as_ref() {
            JobEvent::Complete(result) if result.images.is_empty() => {
                vec![(result.image.as_str(), result.seed)]
            }
            JobEvent::Complete(result) => result
                .images
                .iter()
                .map(|image| (image.image.as_str(), image.seed))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Submits the jobs for `count` images of `request` ([`submit`]), then waits
/// for every one to end.
pub async fn submit_and_wait(
    state: &AppState,
    request: JobRequest,
    count: u32,
) -> Result<Vec<Finished>, ApiError> {
    Ok(submit(state, request, count).await?.ended().await)
}

/// Validates and queues the jobs for `count` images of `request`: jobs of up
/// to [`MAX_NUM_IMAGES`] images, the first seed the request's (random when it
/// has none) and each job's first seed following the previous job's last.
/// Nothing is queued unless every job is valid and fits in the queue; if a
/// later one is refused, the earlier ones are cancelled.
pub async fn submit(
    state: &AppState,
    request: JobRequest,
    count: u32,
) -> Result<Submitted, ApiError> {
    let (model, defaults) = state.serving_model()?;
    let limits = state.limits();
    let lora_dir = state.config().lora_dir.clone();
    let first_seed = request.generation().seed.unwrap_or_else(random_seed);
    // Decoding pictures is CPU work: keep it off the threads that serve streams.
    let valid = tokio::task::spawn_blocking(move || {
        job_sizes(count)
            .map(|(first, images)| {
                let mut copy = request.clone();
                let generation = copy.generation_mut();
                generation.seed = Some(first_seed.wrapping_add(u64::from(first)));
                generation.num_images = Some(images);
                validate(copy, &model, &defaults, &limits, lora_dir.as_ref())
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ApiError::Internal(format!("validating the request: {e}")))??;
    let mut submitted = Submitted {
        state: state.clone(),
        jobs: Vec::with_capacity(valid.len()),
    };
    for job in valid {
        // A refused job drops `submitted`, which cancels those queued before it.
        submitted.jobs.push(state.submit(job)?);
    }
    Ok(submitted)
}

/// The jobs `count` images take: each job's index of its first image and its
/// number of images, [`MAX_NUM_IMAGES`] at most (at least one job of one).
fn job_sizes(count: u32) -> impl Iterator<Item = (u32, u32)> {
    let count = count.max(1);
    (0..count)
        .step_by(MAX_NUM_IMAGES as usize)
        .map(move |first| (first, (count - first).min(MAX_NUM_IMAGES)))
}

/// The jobs of one call, cancelled if the call goes away before they end.
pub struct Submitted {
    state: AppState,
    jobs: Vec<Arc<Job>>,
}

impl Submitted {
    /// Waits for every job to end, in order. Safe to call again after an
    /// unfinished wait was dropped: the jobs already ended answer at once.
    pub async fn ended(&self) -> Vec<Finished> {
        let mut finished = Vec::with_capacity(self.jobs.len());
        for job in &self.jobs {
            let end = job.ended().await;
            finished.push(Finished {
                job: Arc::clone(job),
                end,
            });
        }
        finished
    }

    /// Cancels the job now running, if it is one of these (A1111's skip).
    pub fn cancel_running(&self) {
        for job in &self.jobs {
            if job.state() == JobState::Running {
                tracing::info!(job = job.id(), "skipped: cancelling the running job");
                let _ = self.state.cancel(job.id());
            }
        }
    }

    fn cancel_unfinished(&self) {
        for job in &self.jobs {
            if !job.state().is_terminal() {
                tracing::info!(job = job.id(), "the caller went away: cancelling");
                let _ = self.state.cancel(job.id());
            }
        }
    }
}

impl Drop for Submitted {
    fn drop(&mut self) {
        self.cancel_unfinished();
    }
}

#[cfg(test)]
mod tests {
    use super::job_sizes;

    #[test]
    fn images_are_split_into_jobs_of_at_most_eight() {
        let sizes = |count| job_sizes(count).collect::<Vec<_>>();
        assert_eq!(sizes(0), [(0, 1)]);
        assert_eq!(sizes(3), [(0, 3)]);
        assert_eq!(sizes(8), [(0, 8)]);
        assert_eq!(sizes(20), [(0, 8), (8, 8), (16, 4)]);
    }
}
