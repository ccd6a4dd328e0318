//! The worker's Prometheus metrics, served by `GET /metrics` in Prometheus'
//! text format.
//!
//! Each [`Metrics`] has its own registry (no process-wide recorder), so every
//! worker state in a process, as in the tests, counts only its own jobs.
//! Jobs record their own lifecycle (see [`crate::jobs::Job::observed_by`]);
//! the gauges that describe the worker now (queue depth, running, ready) are
//! read when the metrics are rendered.

use std::time::Duration;

use prometheus::{
    exponential_buckets, Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use sd_contract::JobState;

/// The content type of the text format [`Metrics::render`] writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the worker is doing at the moment of a scrape.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// Jobs waiting in the queue (the shared one, with `--redis-url`).
    pub queued: usize,
    /// Whether a job is running.
    pub running: bool,
    /// Whether the worker takes jobs (the model loaded, not stopping).
    pub ready: bool,
}

/// The counters, gauges and histograms of one worker.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    submitted: IntCounter,
    rejected: IntCounterVec,
    ended: IntCounterVec,
    job_seconds: HistogramVec,
    queue_wait_seconds: Histogram,
    step_seconds: Histogram,
    images: IntCounter,
    model_load_seconds: Gauge,
    queue_depth: IntGauge,
    running: IntGauge,
    ready: IntGauge,
    info: IntGaugeVec,
    redis_errors: IntCounter,
}

/// Why a job was refused at the door.
#[derive(Debug, Clone, Copy)]
pub enum Rejection {
    /// The queue was full (503).
    QueueFull,
    /// The worker was shutting down (503).
    ShuttingDown,
}

impl Rejection {
    fn label(self) -> &'static str {
        match self {
            Rejection::QueueFull => "queue_full",
            Rejection::ShuttingDown => "shutting_down",
        }
    }
}

impl Metrics {
    /// Fresh metrics for a worker with this id, serving `model`.
    pub fn new(worker_id: &str, model: &str) -> Self {
        let registry = Registry::new();
        let job_buckets = exponential_buckets(0.05, 2.0, 16).expect("valid buckets");
        let step_buckets = exponential_buckets(0.005, 2.0, 16).expect("valid buckets");
        let metrics = Self {
            submitted: IntCounter::new(
                "sd_worker_jobs_submitted_total",
                "Jobs accepted into the queue.",
            )
            .expect("valid metric"),
            rejected: IntCounterVec::new(
                Opts::new(
                    "sd_worker_jobs_rejected_total",
                    "Valid jobs refused because the queue was full or the worker was stopping.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            ended: IntCounterVec::new(
                Opts::new(
                    "sd_worker_jobs_ended_total",
                    "Accepted jobs that ended, by outcome (completed, failed, cancelled).",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            job_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "sd_worker_job_duration_seconds",
                    "Time from a job's submission to its end, by outcome.",
                )
                .buckets(job_buckets.clone()),
                &["outcome"],
            )
            .expect("valid metric"),
            queue_wait_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "sd_worker_job_queue_wait_seconds",
                    "Time a job waited in the queue before it started.",
                )
                .buckets(job_buckets),
            )
            .expect("valid metric"),
            step_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "sd_worker_step_duration_seconds",
                    "Time of one denoising step (the first includes text encoding).",
                )
                .buckets(step_buckets),
            )
            .expect("valid metric"),
            images: IntCounter::new(
                "sd_worker_images_total",
                "Images made; rate() of it is images per second.",
            )
            .expect("valid metric"),
            model_load_seconds: Gauge::new(
                "sd_worker_model_load_seconds",
                "How long loading the model took (0 until it has loaded).",
            )
            .expect("valid metric"),
            queue_depth: IntGauge::new("sd_worker_queue_depth", "Jobs waiting in the queue.")
                .expect("valid metric"),
            running: IntGauge::new("sd_worker_jobs_running", "Jobs running now (0 or 1).")
                .expect("valid metric"),
            ready: IntGauge::new(
                "sd_worker_ready",
                "1 while the worker takes jobs, 0 while loading, failed or stopping.",
            )
            .expect("valid metric"),
            info: IntGaugeVec::new(
                Opts::new("sd_worker_info", "Always 1; the labels name the worker."),
                &["worker_id", "model", "version"],
            )
            .expect("valid metric"),
            redis_errors: IntCounter::new(
                "sd_worker_redis_errors_total",
                "Commands to the shared queue's Redis that failed (0 without --redis-url).",
            )
            .expect("valid metric"),
            registry,
        };
        metrics
            .info
            .with_label_values(&[worker_id, model, env!("CARGO_PKG_VERSION")])
            .set(1);
        for outcome in ["completed", "failed", "cancelled"] {
            metrics.ended.with_label_values(&[outcome]);
        }
        for reason in [Rejection::QueueFull, Rejection::ShuttingDown] {
            metrics.rejected.with_label_values(&[reason.label()]);
        }
        metrics.register_all();
        metrics
    }

    fn register_all(&self) {
        let collectors: [Box<dyn prometheus::core::Collector>; 13] = [
            Box::new(self.submitted.clone()),
            Box::new(self.rejected.clone()),
            Box::new(self.ended.clone()),
            Box::new(self.job_seconds.clone()),
            Box::new(self.queue_wait_seconds.clone()),
            Box::new(self.step_seconds.clone()),
            Box::new(self.images.clone()),
            Box::new(self.model_load_seconds.clone()),
            Box::new(self.queue_depth.clone()),
            Box::new(self.running.clone()),
            Box::new(self.ready.clone()),
            Box::new(self.info.clone()),
            Box::new(self.redis_errors.clone()),
        ];
        for collector in collectors {
            self.registry
                .register(collector)
                .expect("metric names are unique");
        }
    }

    /// Counts a job accepted into the queue.
    pub fn job_submitted(&self) {
        self.submitted.inc();
    }

    /// Counts a valid job the worker could not take.
    pub fn job_rejected(&self, why: Rejection) {
        self.rejected.with_label_values(&[why.label()]).inc();
    }

    /// Records that a job left the queue and started after `waited`.
    pub fn job_started(&self, waited: Duration) {
        self.queue_wait_seconds.observe(waited.as_secs_f64());
    }

    /// Records one denoising step that took `took`.
    pub fn step_done(&self, took: Duration) {
        self.step_seconds.observe(took.as_secs_f64());
    }

    /// Counts a finished image.
    pub fn image_done(&self) {
        self.images.inc();
    }

    /// Records that an accepted job ended in `state` (a terminal state),
    /// `lasted` after it was submitted.
    pub fn job_ended(&self, state: JobState, lasted: Duration) {
        let outcome = match state {
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Queued | JobState::Running => return,
        };
        self.ended.with_label_values(&[outcome]).inc();
        self.job_seconds
            .with_label_values(&[outcome])
            .observe(lasted.as_secs_f64());
    }

    /// Counts a failed command to the shared queue's Redis.
    pub fn redis_error(&self) {
        self.redis_errors.inc();
    }

    /// Records how long the model took to load.
    pub fn model_loaded(&self, took: Duration) {
        self.model_load_seconds.set(took.as_secs_f64());
    }

    /// Every metric in Prometheus' text format, with the gauges set from `now`.
    pub fn render(&self, now: Snapshot) -> String {
        self.queue_depth
            .set(i64::try_from(now.queued).unwrap_or(i64::MAX));
        self.running.set(i64::from(now.running));
        self.ready.set(i64::from(now.ready));
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("writing to a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}
