//! One job and its replayable event log.
//!
//! A [`Job`] keeps every event it has emitted in an append-only log and
//! announces each new one on a `watch` channel. A subscriber walks the log from
//! any index, so any number of clients can follow one job, and one that comes
//! late (even after the end) first replays what it missed. The first terminal
//! event wins: a job ends exactly once, whoever tries to end it.
//!
//! Live previews are the one part of the log that is not kept: a progress
//! event that brings a preview takes it off the one before, so a log holds at
//! most one preview (the newest; smaller than the image a finished job keeps)
//! however many steps ran. Clients following live see every preview; one that
//! replays sees the newest only.
//!
//! A job of several images (`num_images`) logs an `image` event as each is
//! finished and keeps the images until it completes, when its `complete`
//! event lists them all; a job of one image logs no `image` event, so its
//! stream is the same as before batches existed.
//!
//! The validated request is held only until the job starts or ends. While
//! the job is queued it holds the pictures of image-to-image and inpainting
//! encoded, as the client sent them (a few dozen KB where the pixels of a
//! 4096² RGBA picture take 64 MiB). [`Job::start`] hands the request to the
//! engine thread, which decodes the pictures and drops them when the
//! generation returns; a job that ends before it starts drops the request
//! then. A finished job keeps its log and parameters only, and
//! [`Job::retained_bytes`] says about how much memory the job holds.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::Stream;
use sd_contract::event::CancelReason;
use sd_contract::{
    BatchImage, ErrorDetail, ImageFormat, ImageResult, JobEvent, JobParams, JobState, JobStatus,
    JobSummary, ProgressPreview, Timings,
};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::validation::ValidJob;

/// One event of a job's log with its index, the stream's event id.
pub type LoggedEvent = (usize, Arc<JobEvent>);

/// A job: its parameters, its state and the log of its events.
#[derive(Debug)]
pub struct Job {
    id: String,
    params: JobParams,
    submitted: Instant,
    cancel: AtomicU8,
    inner: Mutex<JobInner>,
    events: watch::Sender<usize>,
    /// Where the job records its lifecycle, if anywhere.
    metrics: Option<Arc<Metrics>>,
}

#[derive(Debug)]
struct JobInner {
    state: JobState,
    /// The request to run, until the engine takes it or the job ends.
    work: Option<ValidJob>,
    log: Vec<Arc<JobEvent>>,
    /// About how many bytes the log takes.
    log_bytes: usize,
    /// Index of the one logged event that still carries a preview.
    preview_at: Option<usize>,
    step: Option<u32>,
    total: Option<u32>,
    /// The images finished so far, in order.
    images: Vec<BatchImage>,
    started: Option<Instant>,
    /// When the last step (or the start) was logged.
    last_step: Option<Instant>,
    finished: Option<Instant>,
}

const NOT_CANCELLED: u8 = 0;
const CANCELLED_BY_CLIENT: u8 = 1;
const CANCELLED_BY_SHUTDOWN: u8 = 2;

impl Job {
    /// A new queued job with an empty log.
    pub fn new(id: String, job: ValidJob) -> Self {
        Self {
            id,
            params: job.params().clone(),
            submitted: Instant::now(),
            cancel: AtomicU8::new(NOT_CANCELLED),
            inner: Mutex::new(JobInner {
                state: JobState::Queued,
                work: Some(job),
                log: Vec::new(),
                log_bytes: 0,
                preview_at: None,
                step: None,
                total: None,
                images: Vec::new(),
                started: None,
                last_step: None,
                finished: None,
            }),
            events: watch::channel(0).0,
            metrics: None,
        }
    }

    /// The same job, submitted `ago` (a job of the shared queue, submitted
    /// on any worker), so its timings and queue wait count from then.
    pub fn submitted_ago(mut self, ago: Duration) -> Self {
        self.submitted = Instant::now().checked_sub(ago).unwrap_or(self.submitted);
        self
    }

    /// The same job, recording its start, steps, images and end in `metrics`.
    pub fn observed_by(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The job's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The parameters it runs with, as its status reports them.
    pub fn params(&self) -> &JobParams {
        &self.params
    }

    fn lock(&self) -> MutexGuard<'_, JobInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, inner: &mut JobInner, event: JobEvent) {
        inner.log_bytes += event_bytes(&event);
        inner.log.push(Arc::new(event));
        self.events.send_replace(inner.log.len());
    }

    /// The job's state now.
    pub fn state(&self) -> JobState {
        self.lock().state
    }

    /// When it was submitted.
    pub fn submitted_at(&self) -> Instant {
        self.submitted
    }

    /// The job as a listing shows it, with its queue position if it is queued.
    pub fn summary(&self, queue_position: Option<usize>) -> JobSummary {
        let inner = self.lock();
        JobSummary {
            job_id: self.id.clone(),
            state: inner.state,
            queue_position: queue_position.map(|p| u32::try_from(p).unwrap_or(u32::MAX)),
            step: inner.step,
            total: inner.total,
            cancel_requested: self.cancel_requested().is_some() && !inner.state.is_terminal(),
            age_ms: millis(self.submitted.elapsed()),
            params: self.params.clone(),
        }
    }

    /// When it ended, if it has.
    pub fn finished_at(&self) -> Option<Instant> {
        self.lock().finished
    }

    /// About how many bytes the job holds besides its fixed parts: its
    /// parameters, the encoded pictures of a queued job, and its log, the
    /// result image of a completed job included.
    pub fn retained_bytes(&self) -> usize {
        let prompts =
            self.params.prompt.len() + self.params.negative_prompt.as_ref().map_or(0, String::len);
        let inner = self.lock();
        let pictures = inner.work.as_ref().map_or(0, ValidJob::pictures_bytes);
        prompts + pictures + inner.log_bytes
    }

    /// Records that it entered the queue at `position` (1 = next).
    pub fn queued(&self, position: usize) {
        let mut inner = self.lock();
        let position = u32::try_from(position).unwrap_or(u32::MAX);
        self.push(&mut inner, JobEvent::Queued { position });
    }

    /// Asks the job to stop; the engine checks this between the layers of
    /// each phase (text encoding, every UNet pass, the VAE).
    pub fn request_cancel(&self, reason: CancelReason) {
        let code = match reason {
            CancelReason::Client => CANCELLED_BY_CLIENT,
            CancelReason::Shutdown => CANCELLED_BY_SHUTDOWN,
        };
        let _ =
            self.cancel
                .compare_exchange(NOT_CANCELLED, code, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Why a cancellation was asked for, if one was.
    pub fn cancel_requested(&self) -> Option<CancelReason> {
        match self.cancel.load(Ordering::SeqCst) {
            CANCELLED_BY_CLIENT => Some(CancelReason::Client),
            CANCELLED_BY_SHUTDOWN => Some(CancelReason::Shutdown),
            _ => None,
        }
    }

    /// Moves a queued job to running, logs `started` and hands over the
    /// request to run; the job no longer holds it, so its pictures (encoded
    /// still: see [`ValidJob::into_runnable`]) are freed as soon as the caller
    /// drops it. Returns `None` (and ends the job as
    /// cancelled, if asked to) when it must not run.
    pub fn start(&self) -> Option<ValidJob> {
        if let Some(reason) = self.cancel_requested() {
            self.finish_cancelled(reason);
            return None;
        }
        let mut inner = self.lock();
        if inner.state != JobState::Queued {
            return None;
        }
        let work = inner.work.take()?;
        let now = Instant::now();
        inner.state = JobState::Running;
        inner.started = Some(now);
        inner.last_step = Some(now);
        if let Some(metrics) = &self.metrics {
            metrics.job_started(now - self.submitted);
        }
        let steps = match self.params.strength {
            Some(strength) => {
                sd_core::pipeline::steps_at_strength(self.params.steps as usize, strength) as u32
            }
            None => self.params.steps,
        };
        inner.total = Some(steps.saturating_mul(self.params.num_images));
        let params = self.params.clone();
        self.push(&mut inner, JobEvent::Started { params });
        Some(work)
    }

    /// Logs a finished denoising step (1-based), with its live preview if it
    /// has one (which takes the previous preview out of the log).
    pub fn progress(&self, step: usize, total: usize, preview: Option<ProgressPreview>) {
        let mut inner = self.lock();
        if inner.state != JobState::Running {
            return;
        }
        let now = Instant::now();
        if let (Some(metrics), Some(last)) = (&self.metrics, inner.last_step) {
            metrics.step_done(now - last);
        }
        inner.last_step = Some(now);
        let step = u32::try_from(step).unwrap_or(u32::MAX);
        let total = u32::try_from(total).unwrap_or(u32::MAX).max(1);
        inner.step = Some(step);
        inner.total = Some(total);
        let percent = ((10_000.0 * f64::from(step) / f64::from(total)).round() / 100.0) as f32;
        if preview.is_some() {
            drop_preview(&mut inner);
            inner.preview_at = Some(inner.log.len());
        }
        self.push(
            &mut inner,
            JobEvent::Progress {
                step,
                total,
                percent,
                preview,
            },
        );
    }

    /// Records the next finished image of a running job, and logs an `image`
    /// event for it if the job makes several. Ignored once the job has ended.
    pub fn image_done(&self, png: &[u8], width: u32, height: u32, seed: u64) {
        use base64::Engine as _;
        let now = Instant::now();
        let image = base64::engine::general_purpose::STANDARD.encode(png);
        let mut inner = self.lock();
        if inner.state != JobState::Running {
            return;
        }
        let finished = BatchImage {
            index: u32::try_from(inner.images.len()).unwrap_or(u32::MAX),
            image,
            format: ImageFormat::Png,
            seed,
            width,
            height,
            timings: self.timings(&inner, now),
        };
        if self.params.num_images > 1 {
            self.push(&mut inner, JobEvent::Image(finished.clone()));
        }
        inner.images.push(finished);
        inner.last_step = Some(now);
        if let Some(metrics) = &self.metrics {
            metrics.image_done();
        }
    }

    /// Ends the job with the images [`Job::image_done`] recorded: the first
    /// one's fields, and all of them in `images` when it made several.
    /// Returns false if it had already ended, or had no image to end with.
    pub fn finish_complete(&self) -> bool {
        let now = Instant::now();
        let mut inner = self.lock();
        let mut images = std::mem::take(&mut inner.images);
        let Some(first) = images.first().cloned() else {
            return false;
        };
        if images.len() == 1 {
            images.clear();
        }
        let result = ImageResult {
            image: first.image,
            format: first.format,
            seed: first.seed,
            width: first.width,
            height: first.height,
            timings: self.timings(&inner, now),
            images,
        };
        self.finish(&mut inner, JobState::Completed, JobEvent::Complete(result))
    }

    /// The job's timings up to `now`.
    fn timings(&self, inner: &JobInner, now: Instant) -> Timings {
        let started = inner.started.unwrap_or(now);
        Timings {
            queued_ms: millis(started - self.submitted),
            generation_ms: millis(now - started),
            total_ms: millis(now - self.submitted),
        }
    }

    /// Ends the job with an error. Returns false if it had already ended.
    pub fn finish_failed(&self, error: ErrorDetail) -> bool {
        let mut inner = self.lock();
        self.finish(&mut inner, JobState::Failed, JobEvent::Error(error))
    }

    /// Ends the job as cancelled. Returns false if it had already ended.
    pub fn finish_cancelled(&self, reason: CancelReason) -> bool {
        let mut inner = self.lock();
        self.finish(
            &mut inner,
            JobState::Cancelled,
            JobEvent::Cancelled { reason },
        )
    }

    fn finish(&self, inner: &mut JobInner, state: JobState, event: JobEvent) -> bool {
        if inner.state.is_terminal() {
            return false;
        }
        let now = Instant::now();
        inner.state = state;
        inner.finished = Some(now);
        if let Some(metrics) = &self.metrics {
            metrics.job_ended(state, now - self.submitted);
        }
        inner.work = None;
        inner.images = Vec::new();
        self.push(inner, event);
        true
    }

    /// The job's status, with its queue position if it is queued.
    pub fn status(&self, queue_position: Option<usize>) -> JobStatus {
        let inner = self.lock();
        let terminal = inner.log.last().filter(|e| e.is_terminal());
        JobStatus {
            job_id: self.id.clone(),
            state: inner.state,
            queue_position: queue_position.map(|p| u32::try_from(p).unwrap_or(u32::MAX)),
            step: inner.step,
            total: inner.total,
            cancel_requested: self.cancel_requested().is_some() && !inner.state.is_terminal(),
            params: self.params.clone(),
            result: terminal.and_then(|e| match e.as_ref() {
                JobEvent::Complete(result) => Some(result.clone()),
                _ => None,
            }),
            error: terminal.and_then(|e| match e.as_ref() {
                JobEvent::Error(error) => Some(error.clone()),
                _ => None,
            }),
            worker_id: None,
        }
    }

    /// When the engine started it, if it has.
    pub fn started_at(&self) -> Option<Instant> {
        self.lock().started
    }

    /// The newest live preview in the log, if the job has one.
    pub fn latest_preview(&self) -> Option<ProgressPreview> {
        let inner = self.lock();
        match inner
            .preview_at
            .and_then(|i| inner.log.get(i))
            .map(Arc::as_ref)
        {
            Some(JobEvent::Progress {
                preview: Some(preview),
                ..
            }) => Some(preview.clone()),
            _ => None,
        }
    }

    /// How many events the log holds: the next event's id.
    pub fn logged(&self) -> usize {
        self.lock().log.len()
    }

    /// The event at `index` of the log, and whether the job has ended.
    fn event_at(&self, index: usize) -> (Option<Arc<JobEvent>>, bool) {
        let inner = self.lock();
        (inner.log.get(index).cloned(), inner.state.is_terminal())
    }

    /// Waits for the job to end and returns its terminal event: for routes
    /// that answer only once the image is made (OpenAI's and A1111's APIs),
    /// while the job stays an ordinary queued, cancellable one.
    pub async fn ended(&self) -> Arc<JobEvent> {
        let mut rx = self.events.subscribe();
        loop {
            rx.borrow_and_update();
            if let Some(last) = self.lock().log.last().filter(|e| e.is_terminal()) {
                return Arc::clone(last);
            }
            // The job owns the sender, so the channel outlives this borrow.
            let _ = rx.changed().await;
        }
    }

    /// Every event from `from` on: first those already logged, then each new
    /// one as it comes. The stream ends after the terminal event.
    pub fn subscribe(self: &Arc<Self>, from: usize) -> impl Stream<Item = LoggedEvent> + use<> {
        let job = Arc::clone(self);
        let rx = self.events.subscribe();
        futures_util::stream::unfold((job, rx, from), |(job, mut rx, index)| async move {
            loop {
                rx.borrow_and_update();
                match job.event_at(index) {
                    (Some(event), _) => return Some(((index, event), (job, rx, index + 1))),
                    (None, true) => return None,
                    (None, false) => {
                        if rx.changed().await.is_err() {
                            return None;
                        }
                    }
                }
            }
        })
    }
}

/// Replaces the logged event that carries a preview by the same event without it.
fn drop_preview(inner: &mut JobInner) {
    let Some(index) = inner.preview_at.take() else {
        return;
    };
    if let Some(JobEvent::Progress {
        step,
        total,
        percent,
        preview: Some(_),
    }) = inner.log.get(index).map(Arc::as_ref)
    {
        let stripped = JobEvent::Progress {
            step: *step,
            total: *total,
            percent: *percent,
            preview: None,
        };
        inner.log_bytes -= event_bytes(&inner.log[index]);
        inner.log_bytes += event_bytes(&stripped);
        inner.log[index] = Arc::new(stripped);
    }
}

/// About how many bytes a logged event takes: the event itself and the text
/// it carries (the base64 image of a result, a preview's data URL).
fn event_bytes(event: &JobEvent) -> usize {
    let text = match event {
        JobEvent::Started { params } => {
            params.prompt.len() + params.negative_prompt.as_ref().map_or(0, String::len)
        }
        JobEvent::Progress {
            preview: Some(preview),
            ..
        } => preview.data_url.len(),
        JobEvent::Image(image) => image.image.len(),
        JobEvent::Complete(result) => {
            result.image.len() + result.images.iter().map(|i| i.image.len()).sum::<usize>()
        }
        JobEvent::Error(error) => error.message.len() + error.field.as_ref().map_or(0, String::len),
        JobEvent::Restarted { worker_id, .. } => worker_id.len(),
        JobEvent::Queued { .. } | JobEvent::Progress { .. } | JobEvent::Cancelled { .. } => 0,
    };
    std::mem::size_of::<Arc<JobEvent>>() + std::mem::size_of::<JobEvent>() + text
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use sd_contract::ErrorCode;

    use super::super::testing::{batch, inpaint_job, job};
    use super::*;

    fn names(events: &[LoggedEvent]) -> Vec<&'static str> {
        events.iter().map(|(_, e)| e.name()).collect()
    }

    #[tokio::test]
    async fn subscribers_replay_and_follow() {
        let job = job();
        job.queued(1);
        let early = tokio::spawn(job.subscribe(0).collect::<Vec<_>>());
        assert!(job.start().is_some());
        job.progress(1, 2, None);
        job.progress(2, 2, None);
        job.image_done(b"png", 64, 64, 7);
        assert!(job.finish_complete());
        assert!(!job.finish_failed(ErrorDetail::new(ErrorCode::Internal, "late")));
        let early = early.await.unwrap();
        let late: Vec<_> = job.subscribe(0).collect().await;
        let expected = ["queued", "started", "progress", "progress", "complete"];
        assert_eq!(names(&early), expected);
        assert_eq!(names(&late), expected);
        let resumed: Vec<_> = job.subscribe(3).collect().await;
        assert_eq!(names(&resumed), ["progress", "complete"]);
        assert_eq!(resumed[0].0, 3);
        let status = job.status(None);
        assert_eq!(status.state, JobState::Completed);
        assert_eq!(status.result.unwrap().image, "cG5n");
    }

    #[tokio::test]
    async fn waiting_for_the_end_returns_the_terminal_event() {
        let job = job();
        job.queued(1);
        let waiting = {
            let job = Arc::clone(&job);
            tokio::spawn(async move { job.ended().await })
        };
        assert!(job.start().is_some());
        job.progress(1, 2, None);
        assert!(!waiting.is_finished());
        job.request_cancel(CancelReason::Client);
        assert!(job.finish_cancelled(CancelReason::Client));
        assert_eq!(waiting.await.unwrap().name(), "cancelled");
        // A job that has already ended answers at once.
        assert_eq!(job.ended().await.name(), "cancelled");
    }

    #[test]
    fn the_log_keeps_only_the_newest_preview() {
        let preview = |n: u32| ProgressPreview {
            data_url: format!("data:image/png;base64,{n}"),
            width: n,
            height: n,
        };
        let previews = |job: &Arc<Job>| -> Vec<Option<u32>> {
            let inner = job.lock();
            inner
                .log
                .iter()
                .filter_map(|e| match e.as_ref() {
                    JobEvent::Progress { preview, .. } => Some(preview.as_ref().map(|p| p.width)),
                    _ => None,
                })
                .collect()
        };
        let job = job();
        assert!(job.start().is_some());
        job.progress(1, 4, Some(preview(1)));
        assert_eq!(previews(&job), [Some(1)]);
        job.progress(2, 4, None);
        job.progress(3, 4, Some(preview(3)));
        assert_eq!(previews(&job), [None, None, Some(3)]);
        job.progress(4, 4, None);
        job.image_done(b"png", 64, 64, 7);
        assert!(job.finish_complete());
        assert_eq!(previews(&job), [None, None, Some(3), None]);
        let JobEvent::Progress { step, percent, .. } = job.lock().log[1].as_ref().clone() else {
            panic!("not a progress event")
        };
        assert_eq!((step, percent), (1, 25.0));
    }

    #[test]
    fn a_cancelled_queued_job_does_not_start() {
        let job = job();
        job.request_cancel(CancelReason::Client);
        job.request_cancel(CancelReason::Shutdown);
        assert!(job.start().is_none());
        assert_eq!(job.state(), JobState::Cancelled);
        assert_eq!(job.cancel_requested(), Some(CancelReason::Client));
        assert!(!job.status(None).cancel_requested);
    }

    #[test]
    fn the_request_goes_with_the_engine_or_when_the_job_ends() {
        let holds_work = |job: &Arc<Job>| job.lock().work.is_some();
        let queued = job();
        assert!(holds_work(&queued));
        assert!(queued.finish_cancelled(CancelReason::Client));
        assert!(!holds_work(&queued));
        assert!(queued.start().is_none());

        let running = job();
        let work = running.start().expect("a queued job starts");
        assert_eq!(work.params(), running.params());
        assert!(!holds_work(&running));
        assert!(running.start().is_none());
    }

    #[test]
    fn retained_bytes_count_the_result_and_only_the_newest_preview() {
        let job = job();
        let fresh = job.retained_bytes();
        assert!(job.start().is_some());
        let preview = |n: usize| ProgressPreview {
            data_url: "p".repeat(n),
            width: 8,
            height: 8,
        };
        job.progress(1, 2, Some(preview(10_000)));
        let one = job.retained_bytes();
        assert!(one >= fresh + 10_000, "{one}");
        job.progress(2, 2, Some(preview(10_000)));
        assert!(job.retained_bytes() < one + 1_000);
        let before = job.retained_bytes();
        job.image_done(&[0; 30_000], 64, 64, 7);
        assert!(job.finish_complete());
        assert!(job.retained_bytes() >= before + 40_000);
    }

    #[test]
    fn a_queued_job_holds_its_pictures_encoded() {
        // Decoded, the 2048² RGB picture and mask would take 24 MiB.
        let (job, png_bytes) = inpaint_job(2048);
        let text_job = self::job();
        let queued = job.retained_bytes();
        assert!(queued >= 2 * png_bytes, "{queued} < 2 × {png_bytes}");
        assert!(
            queued < 2 * png_bytes + text_job.retained_bytes() + 1_000,
            "{queued} bytes for two {png_bytes}-byte PNGs"
        );
        let work = job.start().expect("a queued job starts");
        assert!(job.retained_bytes() < 1_000, "{}", job.retained_bytes());
        let input = work
            .into_runnable()
            .unwrap()
            .generation()
            .image
            .clone()
            .unwrap();
        assert_eq!((input.image.width(), input.image.height()), (2048, 2048));
        assert!(input.image.pixels().chunks(3).all(|p| p == [90, 160, 30]));
        assert!(input.mask.is_some());
    }

    #[tokio::test]
    async fn a_batch_logs_each_image_and_completes_with_all_of_them() {
        let job = batch(3);
        let work = job.start().expect("a queued job starts");
        assert_eq!(work.params().num_images, 3);
        assert_eq!(job.status(None).total, Some(6));
        let seed = job.params().seed;
        for (i, png) in [b"one", b"two", b"333"].iter().enumerate() {
            job.progress(2 * i + 1, 6, None);
            job.progress(2 * i + 2, 6, None);
            job.image_done(*png, 64, 64, seed + i as u64);
        }
        assert!(job.finish_complete());
        let events: Vec<_> = job.subscribe(0).collect().await;
        assert_eq!(
            names(&events),
            ["started", "progress", "progress", "image", "progress", "progress", "image"]
                .into_iter()
                .chain(["progress", "progress", "image", "complete"])
                .collect::<Vec<_>>()
        );
        let JobEvent::Image(second) = events[6].1.as_ref() else {
            panic!("not an image event")
        };
        assert_eq!(
            (second.index, second.seed, second.image.as_str()),
            (1, seed + 1, "dHdv")
        );
        let result = job.status(None).result.expect("a result");
        assert_eq!((result.seed, result.image.as_str()), (seed, "b25l"));
        let seeds: Vec<u64> = result.images.iter().map(|i| i.seed).collect();
        assert_eq!(seeds, [seed, seed + 1, seed + 2]);
        assert_eq!(result.images[1], *second);
    }
}
