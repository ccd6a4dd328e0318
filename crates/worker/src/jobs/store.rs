//! [`JobStore`]: where the job API's jobs live, this process's memory or the
//! shared Redis queue (`--redis-url`), behind the four operations the routes
//! call: submit, status, cancel and events.
//!
//! In memory, a job is queued here, runs on this worker's engine and is
//! known to this worker only. With Redis, it is queued for every worker of
//! the model, runs on whichever takes it ([`super::redis`]), and any worker
//! answers for it. Either way the engine runs ordinary [`Job`]s from the
//! local queue; the OpenAI and AUTOMATIC1111 routes, whose callers wait on
//! their connection for the images, always use the local queue.

use std::sync::Arc;

use axum::http::StatusCode;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use sd_contract::{JobRequest, JobState, JobStatus};

use super::redis::RedisQueue;
use super::{new_job_id, Job, LoggedEvent};
use crate::error::ApiError;
use crate::metrics::Rejection;
use crate::state::AppState;
use crate::validation::ValidJob;

/// Where the job API's jobs live.
#[derive(Debug, Clone)]
pub enum JobStore {
    /// This process's queue and registry.
    Memory,
    /// The shared queue of every worker serving the model.
    Redis(Arc<RedisQueue>),
}

/// A job's events, wherever they are kept.
pub enum EventSource {
    /// The log of a job in memory.
    Memory(Arc<Job>),
    /// A job's event stream in Redis.
    Redis(Arc<RedisQueue>, String),
}

impl EventSource {
    /// Every event from index `from` on, then each new one, up to the terminal one.
    pub fn subscribe(&self, from: usize) -> BoxStream<'static, LoggedEvent> {
        match self {
            EventSource::Memory(job) => job.subscribe(from).boxed(),
            EventSource::Redis(queue, id) => queue.follow(id, from),
        }
    }
}

impl AppState {
    /// Queues a validated job, `request` being what it was validated from
    /// (Redis keeps it, with the seed chosen, for the worker that runs it);
    /// returns its id.
    pub async fn submit_job(
        &self,
        mut request: JobRequest,
        job: ValidJob,
    ) -> Result<String, ApiError> {
        let queue = match self.store() {
            JobStore::Memory => return self.submit(job).map(|job| job.id().to_string()),
            JobStore::Redis(queue) => queue,
        };
        let id = new_job_id();
        request.generation_mut().seed = Some(job.params().seed);
        match queue.submit(&id, &request, job.params()).await? {
            Some(position) => {
                self.metrics().job_submitted();
                tracing::info!(job = %id, position, "job queued in the shared queue");
                Ok(id)
            }
            None => {
                self.metrics().job_rejected(Rejection::QueueFull);
                Err(self.queue_full())
            }
        }
    }

    /// A job's status (with Redis, from any worker of the model).
    pub async fn job_status(&self, id: &str) -> Result<JobStatus, ApiError> {
        match self.store() {
            JobStore::Memory => {
                let mut status = self.status(id)?;
                if status.state != JobState::Queued {
                    status.worker_id = Some(self.config().worker_id.clone());
                }
                Ok(status)
            }
            JobStore::Redis(queue) => queue.status(id).await,
        }
    }

    /// Cancels a job: a queued one ends at once (200), a running one stops
    /// within a step (202), wherever it runs.
    pub async fn cancel_job(&self, id: &str) -> Result<(StatusCode, JobStatus), ApiError> {
        match self.store() {
            JobStore::Memory => self.cancel(id),
            JobStore::Redis(queue) => queue.cancel(id).await,
        }
    }

    /// How many events a job has logged so far, and where to read them.
    pub async fn job_events(&self, id: &str) -> Result<(usize, EventSource), ApiError> {
        match self.store() {
            JobStore::Memory => {
                let job = self.job(id)?;
                Ok((job.logged(), EventSource::Memory(job)))
            }
            JobStore::Redis(queue) => {
                let logged = queue.logged(id).await?;
                Ok((
                    logged,
                    EventSource::Redis(Arc::clone(queue), id.to_string()),
                ))
            }
        }
    }

    /// Jobs waiting: in this worker's queue, or in the shared one.
    pub fn queue_depth(&self) -> usize {
        match self.store() {
            JobStore::Memory => self.queue().len(),
            JobStore::Redis(queue) => queue.queued(),
        }
    }
}
