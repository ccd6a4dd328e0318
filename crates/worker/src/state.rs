//! The state the routes, the engine thread and the hive client share.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use axum::http::StatusCode;
use sd_contract::event::CancelReason;
use sd_contract::limits::{
    MAX_GUIDANCE_SCALE, MAX_NUM_IMAGES, MAX_PROMPT_CHARS, MAX_STEPS, MIN_SIZE, SIZE_MULTIPLE,
};
use sd_contract::{
    JobCounts, JobList, JobState, JobStatus, Limits, Readiness, ReadinessState, SchedulerKind,
    WorkerInfo, WorkerStatus, MAX_LISTED_FINISHED, MAX_LISTED_QUEUED,
};
use sd_core::model::ModelProfile;
use sd_core::pipeline::Defaults;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::config::WorkerConfig;
use crate::convert::{compute_info, defaults_to_wire};
use crate::embeddings::EmbeddingsDir;
use crate::error::ApiError;
use crate::jobs::redis::RedisQueue;
use crate::jobs::{new_job_id, Job, JobStore, Jobs, Retention};
use crate::loras::LoraDir;
use crate::metrics::{Metrics, Rejection, Snapshot};
use crate::queue::{JobQueue, PushError};
use crate::validation::ValidJob;

/// Seconds since the Unix epoch (0 for a time before it).
pub fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Where the worker is in its life.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Loading the model.
    Loading,
    /// Serving jobs.
    Ready,
    /// The model failed to load.
    Failed(String),
    /// Shutting down.
    Stopping,
}

/// The shared state; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    config: WorkerConfig,
    addr: SocketAddr,
    jobs: Jobs,
    queue: JobQueue,
    phase: watch::Sender<Phase>,
    model: RwLock<Option<(ModelProfile, Defaults)>>,
    running: Mutex<Option<Arc<Job>>>,
    busy: watch::Sender<bool>,
    last_generation_ms: AtomicU64,
    streams: Arc<Semaphore>,
    started: SystemTime,
    metrics: Arc<Metrics>,
    store: JobStore,
}

impl AppState {
    /// The state of a worker serving on `addr`, its model still loading.
    ///
    /// # Panics
    ///
    /// When `config.redis` has a URL Redis cannot take (the serve flags
    /// check it first); [`AppState::try_new`] returns that error instead.
    pub fn new(config: WorkerConfig, addr: SocketAddr) -> Self {
        Self::try_new(config, addr).expect("a valid --redis-url")
    }

    /// The state of a worker serving on `addr`, its model still loading; its
    /// jobs in memory, or in the shared queue of `config.redis` (connected
    /// lazily: Redis may be down now).
    pub fn try_new(config: WorkerConfig, addr: SocketAddr) -> Result<Self, redis::RedisError> {
        let queue = JobQueue::new(config.max_queue);
        let streams = Arc::new(Semaphore::new(config.connections.max_streams));
        let jobs = Jobs::new(Retention {
            period: config.job_retention,
            max_finished: config.max_finished_jobs,
            max_bytes: config.max_retained_bytes,
        });
        let metrics = Arc::new(Metrics::new(&config.worker_id, &config.model));
        let store = match &config.redis {
            None => JobStore::Memory,
            Some(redis) => JobStore::Redis(Arc::new(RedisQueue::new(
                redis.clone(),
                &config.model,
                &config.worker_id,
                config.max_queue,
                Arc::clone(&metrics),
            )?)),
        };
        Ok(Self(Arc::new(Shared {
            store,
            metrics,
            config,
            addr,
            jobs,
            queue,
            phase: watch::channel(Phase::Loading).0,
            model: RwLock::new(None),
            running: Mutex::new(None),
            busy: watch::channel(false).0,
            last_generation_ms: AtomicU64::new(0),
            streams,
            started: SystemTime::now(),
        })))
    }

    /// Where the job API's jobs live.
    pub fn store(&self) -> &JobStore {
        &self.0.store
    }

    /// A new queued job with this id, observed by the worker's metrics.
    pub fn new_job(&self, id: String, job: ValidJob) -> Arc<Job> {
        Arc::new(Job::new(id, job).observed_by(Arc::clone(&self.0.metrics)))
    }

    /// A job of the shared queue with this id, submitted `ago` on any
    /// worker, observed by this worker's metrics.
    pub fn shared_job(&self, id: String, job: ValidJob, ago: Duration) -> Arc<Job> {
        Arc::new(
            Job::new(id, job)
                .submitted_ago(ago)
                .observed_by(Arc::clone(&self.0.metrics)),
        )
    }

    /// The configuration.
    pub fn config(&self) -> &WorkerConfig {
        &self.0.config
    }

    /// When this state was made (the worker started), in seconds since the Unix epoch.
    pub fn started_unix(&self) -> u64 {
        unix_seconds(self.0.started)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.0.addr
    }

    /// The URL clients and the hive reach the worker at.
    pub fn public_url(&self) -> String {
        match &self.0.config.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None if self.0.addr.ip().is_unspecified() => {
                format!("http://127.0.0.1:{}", self.0.addr.port())
            }
            None => format!("http://{}", self.0.addr),
        }
    }

    /// The job registry.
    pub fn jobs(&self) -> &Jobs {
        &self.0.jobs
    }

    /// The worker's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// The worker's metrics in Prometheus' text format, as of now.
    pub fn render_metrics(&self) -> String {
        self.0.metrics.render(Snapshot {
            queued: self.queue_depth(),
            running: self.is_busy(),
            ready: self.phase() == Phase::Ready,
        })
    }

    /// The queue.
    pub fn queue(&self) -> &JobQueue {
        &self.0.queue
    }

    /// The worker's phase now.
    pub fn phase(&self) -> Phase {
        self.0.phase.borrow().clone()
    }

    /// A receiver of phase changes.
    pub fn watch_phase(&self) -> watch::Receiver<Phase> {
        self.0.phase.subscribe()
    }

    /// Records that the model loaded, and works out the request defaults
    /// (sd-core's [`Defaults::resolve`], under the preset in force, with the
    /// configured prompt syntax and decoder).
    pub fn mark_ready(&self, profile: ModelProfile) {
        let defaults = Defaults {
            prompt_syntax: self.0.config.prompt_syntax,
            decoder: self.0.config.decoding.vae_decoder.decoder(),
            ..Defaults::resolve(self.0.config.preset, &profile)
        };
        *self.0.model.write().unwrap_or_else(|e| e.into_inner()) = Some((profile, defaults));
        self.0.phase.send_if_modified(|phase| {
            let loading = *phase == Phase::Loading;
            if loading {
                *phase = Phase::Ready;
            }
            loading
        });
    }

    /// Records that the model failed to load.
    pub fn mark_failed(&self, reason: String) {
        self.0.phase.send_if_modified(|phase| {
            let loading = *phase == Phase::Loading;
            if loading {
                *phase = Phase::Failed(reason);
            }
            loading
        });
    }

    /// The body and status of `GET /ready`; a failed load's reason names
    /// absolute paths only when `detailed` (see [`redact_paths`]).
    pub fn readiness(&self, detailed: bool) -> (StatusCode, Readiness) {
        let (state, reason) = match self.phase() {
            Phase::Loading => (
                ReadinessState::Loading,
                Some("loading the model".to_string()),
            ),
            Phase::Ready => match self.store() {
                JobStore::Redis(queue) if !queue.is_up() => (
                    ReadinessState::QueueUnreachable,
                    Some(format!(
                        "the shared job queue (Redis at {}) cannot be reached; reconnecting",
                        queue.config().redacted_url()
                    )),
                ),
                _ => (ReadinessState::Ready, None),
            },
            Phase::Failed(reason) => (
                ReadinessState::Failed,
                Some(format!(
                    "the model failed to load: {}",
                    self.shown_reason(&reason, detailed)
                )),
            ),
            Phase::Stopping => (ReadinessState::Stopping, Some("shutting down".to_string())),
        };
        let ready = state == ReadinessState::Ready;
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (
            status,
            Readiness {
                ready,
                state,
                reason,
            },
        )
    }

    /// What requests are validated against, once the model is ready: its
    /// profile and the defaults.
    pub fn serving_model(&self) -> Result<(ModelProfile, Defaults), ApiError> {
        match self.phase() {
            Phase::Ready => {
                let model = self.0.model.read().unwrap_or_else(|e| e.into_inner());
                (*model).ok_or_else(|| ApiError::Internal("ready without a model profile".into()))
            }
            Phase::Loading => Err(ApiError::NotReady {
                reason: "the model is still loading".into(),
                retry: true,
            }),
            Phase::Failed(reason) => Err(ApiError::NotReady {
                reason: format!(
                    "the model failed to load: {}",
                    self.shown_reason(&reason, self.0.config.api_key.is_some())
                ),
                retry: false,
            }),
            Phase::Stopping => Err(ApiError::ShuttingDown),
        }
    }

    /// A failed load's reason as a client sees it: whole for one that proved
    /// it holds the API key, else with its absolute paths redacted.
    fn shown_reason(&self, reason: &str, detailed: bool) -> String {
        if detailed {
            reason.to_string()
        } else {
            redact_paths(reason)
        }
    }

    /// The bounds requests must respect.
    pub fn limits(&self) -> Limits {
        let c = &self.0.config;
        Limits {
            min_size: MIN_SIZE,
            max_size: c.max_size,
            size_multiple: SIZE_MULTIPLE,
            max_prompt_chars: count(MAX_PROMPT_CHARS),
            max_steps: MAX_STEPS,
            max_guidance_scale: MAX_GUIDANCE_SCALE,
            max_num_images: MAX_NUM_IMAGES,
            max_queue: u32::try_from(c.max_queue).unwrap_or(u32::MAX),
            max_body_bytes: c.max_body_bytes,
            max_input_pixels: c.max_input_pixels,
        }
    }

    /// Queues a validated job and registers it.
    pub fn submit(&self, job: ValidJob) -> Result<Arc<Job>, ApiError> {
        let job = self.new_job(new_job_id(), job);
        self.0.jobs.insert(Arc::clone(&job));
        match self.0.queue.push(Arc::clone(&job)) {
            Ok(position) => {
                self.0.metrics.job_submitted();
                tracing::info!(job = job.id(), position, "job queued");
                Ok(job)
            }
            Err(err) => {
                self.0.jobs.remove(job.id());
                self.0.metrics.job_rejected(match err {
                    PushError::Full => Rejection::QueueFull,
                    PushError::Closed => Rejection::ShuttingDown,
                });
                Err(match err {
                    PushError::Full => self.queue_full(),
                    PushError::Closed => ApiError::ShuttingDown,
                })
            }
        }
    }

    /// The answer to a job the full queue cannot take.
    pub fn queue_full(&self) -> ApiError {
        ApiError::QueueFull {
            capacity: self.0.queue.capacity(),
            retry_after_secs: self.retry_after_secs(),
        }
    }

    fn retry_after_secs(&self) -> u64 {
        match self.0.last_generation_ms.load(Ordering::Relaxed) {
            0 => 5,
            ms => ms.div_ceil(1000).clamp(1, 300),
        }
    }

    /// Takes one of the `--max-streams` slots for an event stream; it is
    /// free again when the permit drops.
    pub fn open_stream(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.0.streams)
            .try_acquire_owned()
            .map_err(|_| ApiError::TooManyStreams {
                limit: self.0.config.connections.max_streams,
                retry_after_secs: self.retry_after_secs(),
            })
    }

    /// The status of a job.
    pub fn status(&self, id: &str) -> Result<JobStatus, ApiError> {
        let job = self.job(id)?;
        Ok(job.status(self.0.queue.position(id)))
    }

    /// The running job, the first [`MAX_LISTED_QUEUED`] of the queue in
    /// order and the newest [`MAX_LISTED_FINISHED`] finished jobs, without
    /// their images.
    pub fn list(&self) -> JobList {
        let mut unfinished = Vec::new();
        let mut finished = Vec::new();
        for job in self.0.jobs.all() {
            let summary = job.summary(self.0.queue.position(job.id()));
            if summary.state.is_terminal() {
                finished.push(summary);
            } else {
                unfinished.push(summary);
            }
        }
        let queued = unfinished
            .iter()
            .filter(|j| j.state == JobState::Queued)
            .count();
        // The running job (no position) first, then the queue in order.
        unfinished.sort_by_key(|job| job.queue_position.unwrap_or(0));
        unfinished.truncate(MAX_LISTED_QUEUED + 1);
        finished.reverse();
        finished.truncate(MAX_LISTED_FINISHED);
        unfinished.extend(finished);
        JobList {
            jobs: unfinished,
            queued: u32::try_from(queued).unwrap_or(u32::MAX),
        }
    }

    /// The job with this id.
    pub fn job(&self, id: &str) -> Result<Arc<Job>, ApiError> {
        self.0
            .jobs
            .get(id)
            .ok_or_else(|| ApiError::JobNotFound(id.to_string()))
    }

    /// Cancels a job: a queued one ends at once (200), a running one stops
    /// mid-step, between two layers of the model (202).
    pub fn cancel(&self, id: &str) -> Result<(StatusCode, JobStatus), ApiError> {
        let job = self.job(id)?;
        if let Some(queued) = self.0.queue.remove(id) {
            queued.finish_cancelled(CancelReason::Client);
            self.expire_jobs();
            tracing::info!(job = id, "queued job cancelled");
            return Ok((StatusCode::OK, queued.status(None)));
        }
        let state = job.state();
        if state.is_terminal() {
            return Err(ApiError::JobFinished {
                job_id: id.to_string(),
                state,
            });
        }
        job.request_cancel(CancelReason::Client);
        tracing::info!(job = id, "cancellation requested");
        let status = job.status(None);
        let code = if status.state == JobState::Cancelled {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        };
        Ok((code, status))
    }

    /// Records the job the engine runs now (`None` when it is idle).
    pub fn set_running(&self, job: Option<Arc<Job>>) {
        let busy = job.is_some();
        *self.0.running.lock().unwrap_or_else(|e| e.into_inner()) = job;
        self.0.busy.send_replace(busy);
    }

    /// The job the engine runs now, if any.
    pub fn running_job(&self) -> Option<Arc<Job>> {
        self.0
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Remembers how long a finished job took, for `Retry-After`.
    pub fn record_generation_time(&self, job: &Job) {
        if let Some(result) = job.status(None).result {
            let ms = result.timings.generation_ms.max(1);
            self.0.last_generation_ms.store(ms, Ordering::Relaxed);
        }
    }

    /// Whether a job is running.
    pub fn is_busy(&self) -> bool {
        *self.0.busy.borrow()
    }

    /// What a heartbeat reports.
    pub fn worker_status(&self) -> WorkerStatus {
        match self.phase() {
            Phase::Loading | Phase::Failed(_) => WorkerStatus::Starting,
            Phase::Stopping => WorkerStatus::Stopping,
            Phase::Ready if self.is_busy() => WorkerStatus::Busy,
            Phase::Ready => WorkerStatus::Ready,
        }
    }

    /// The body of `GET /v1/info`.
    pub fn info(&self) -> WorkerInfo {
        let c = &self.0.config;
        let model = self.0.model.read().unwrap_or_else(|e| e.into_inner());
        WorkerInfo {
            worker_id: c.worker_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            model: c.model.clone(),
            preset: c.preset.map(|p| p.name.to_string()),
            vae: c.model_flags.vae.clone(),
            family: model
                .as_ref()
                .map(|(profile, _)| profile.family.as_str().to_string()),
            backend: c.backend.as_str().to_string(),
            device: c.device,
            dtype: c.precision.weights.as_str().to_string(),
            compute: model
                .as_ref()
                .map(|(profile, _)| compute_info(&profile.precision)),
            ready: self.phase() == Phase::Ready,
            defaults: model
                .as_ref()
                .map(|(_, defaults)| defaults_to_wire(defaults)),
            limits: self.limits(),
            schedulers: SchedulerKind::ALL.to_vec(),
            jobs: JobCounts {
                queued: count(self.queue_depth()),
                running: u32::from(self.is_busy()),
                retained: count(self.0.jobs.len()),
            },
            loras: c.lora_dir.as_ref().map(LoraDir::summary),
            embeddings: c.embeddings.as_ref().map(EmbeddingsDir::summary),
        }
    }

    /// Forgets the finished jobs past their retention (period, count or
    /// bytes); returns how many.
    pub fn expire_jobs(&self) -> usize {
        self.0.jobs.expire(Instant::now())
    }

    /// Stops taking jobs: the phase becomes `Stopping`, waiting jobs are
    /// cancelled, and the running one is asked to stop unless the worker
    /// drains. Idempotent.
    pub fn begin_shutdown(&self) {
        let was = self.0.phase.send_replace(Phase::Stopping);
        if was == Phase::Stopping {
            return;
        }
        let waiting = self.0.queue.close();
        tracing::info!(waiting = waiting.len(), "shutting down");
        for job in waiting {
            job.finish_cancelled(CancelReason::Shutdown);
        }
        if !self.0.config.drain_on_shutdown {
            let running = self.0.running.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(job) = running.as_ref() {
                job.request_cancel(CancelReason::Shutdown);
            }
        }
    }

    /// Ends every job that has not ended as cancelled by the shutdown (the
    /// engine, if it is still computing one, stops at its next check);
    /// returns how many.
    pub fn cancel_unfinished(&self) -> usize {
        let mut ended = 0;
        for job in self.0.jobs.unfinished() {
            job.request_cancel(CancelReason::Shutdown);
            if job.finish_cancelled(CancelReason::Shutdown) {
                tracing::info!(job = job.id(), "job cancelled by the shutdown");
                ended += 1;
            }
        }
        ended
    }

    /// Waits until no job runs.
    pub async fn wait_idle(&self) {
        let mut busy = self.0.busy.subscribe();
        let _ = busy.wait_for(|busy| !busy).await;
    }
}

/// `text` with every absolute path (`/home/x/models/sd/unet/w.safetensors`,
/// `C:\models\w.safetensors`, `\\server\share\w`) cut to `…/` and its last
/// component, so a message still names the file without telling where the
/// models are kept (or whose home they are in).
pub fn redact_paths(text: &str) -> String {
    /// Characters a path may follow, and (with `)]}` and `,;`) may end at.
    const OPENERS: &str = "`'\"([{=";
    const CLOSERS: &str = "`'\")]},;";
    let mut out = String::with_capacity(text.len());
    let mut at_token_start = true;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if at_token_start && starts_absolute_path(rest) {
            let end = rest
                .find(|c: char| c.is_whitespace() || CLOSERS.contains(c))
                .unwrap_or(rest.len());
            let path = rest[..end].trim_end_matches(['.', ':']);
            let last = path
                .trim_end_matches(['/', '\\'])
                .rsplit(['/', '\\'])
                .next()
                .unwrap_or_default();
            out.push_str("…/");
            out.push_str(last);
            rest = &rest[path.len()..];
            at_token_start = false;
            continue;
        }
        out.push(c);
        at_token_start = c.is_whitespace() || OPENERS.contains(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Whether `text` begins with an absolute Unix or Windows path.
fn starts_absolute_path(text: &str) -> bool {
    let bytes = text.as_bytes();
    match bytes {
        [b'/', next, ..] => !next.is_ascii_whitespace(),
        [b'\\', b'\\', ..] => true,
        [drive, b':', b'\\' | b'/', ..] => drive.is_ascii_alphabetic(),
        _ => false,
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::redact_paths;

    #[test]
    fn absolute_paths_are_cut_to_their_last_component() {
        for (text, expected) in [
            (
                "missing model file /home/x/models/sd/unet/config.json",
                "missing model file …/config.json",
            ),
            (
                "cannot read `/srv/m/vae/w.safetensors`: denied",
                "cannot read `…/w.safetensors`: denied",
            ),
            (
                "invalid /data/m/model_index.json: expected value.",
                "invalid …/model_index.json: expected value.",
            ),
            (
                r"opening C:\Users\x\sd\unet (os error 2)",
                "opening …/unet (os error 2)",
            ),
            (r"share \\nas\models\sd failed", "share …/sd failed"),
            ("path=/a/b/c, again", "path=…/c, again"),
            (
                "fetching https://huggingface.co/org/repo: 404, see a/b",
                "fetching https://huggingface.co/org/repo: 404, see a/b",
            ),
            ("ratio 1/2 and / alone", "ratio 1/2 and / alone"),
        ] {
            assert_eq!(redact_paths(text), expected, "{text}");
        }
    }
}
