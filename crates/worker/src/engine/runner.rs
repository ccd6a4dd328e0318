//! The engine thread: loads the model, then runs queued jobs one at a time.
//!
//! The thread is named `sd-engine` and is the only place the model lives.
//! Every job it takes ends in exactly one terminal event: a guard ends the job
//! as failed on any path that forgot to (a panic included), frees the
//! running slot and applies the retention limits to the finished jobs.

use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::SystemTime;

use sd_contract::event::CancelReason;
use sd_contract::{ErrorCode, ErrorDetail};
use sd_core::Interrupt;

use super::{Engine, EngineError, EngineLoader, EngineOutput, StepUpdate};
use crate::jobs::Job;
use crate::outputs::{FinishedImage, OutputDir};
use crate::state::{AppState, Phase};
use crate::validation::RunnableJob;

/// Starts the engine thread: it loads the model with `loader`, marks the
/// worker ready (or failed), then serves the queue until it is closed.
pub fn spawn_engine(state: AppState, loader: EngineLoader) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sd-engine".into())
        .spawn(move || run(state, loader))
}

fn run(state: AppState, loader: EngineLoader) {
    tracing::info!(model = %state.config().model, "loading the model");
    let loading = std::time::Instant::now();
    let loaded = catch_unwind(AssertUnwindSafe(loader))
        .unwrap_or_else(|panic| Err(EngineError::Failed(panic_message(&panic))));
    let mut engine = match loaded {
        Ok(engine) => engine,
        Err(err) => {
            tracing::error!(model = %state.config().model, error = %err, "the model failed to load");
            state.mark_failed(err.to_string());
            return;
        }
    };
    state.metrics().model_loaded(loading.elapsed());
    let profile = engine.profile();
    tracing::info!(family = %profile.family, scheduler = %profile.scheduler, "model loaded; ready");
    state.mark_ready(profile);
    while let Some(job) = state.queue().pop() {
        run_job(engine.as_mut(), &state, job);
    }
    tracing::info!("engine thread stopped");
}

/// Frees the running slot and makes sure the job ended, whatever happened.
struct RunningGuard<'a> {
    state: &'a AppState,
    job: Arc<Job>,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        if self.job.finish_failed(ErrorDetail::new(
            ErrorCode::Internal,
            "the engine stopped without finishing the job",
        )) {
            tracing::error!(job = self.job.id(), "job ended by the engine guard");
        }
        self.state.set_running(None);
        self.state.expire_jobs();
    }
}

fn run_job(engine: &mut dyn Engine, state: &AppState, job: Arc<Job>) {
    state.set_running(Some(Arc::clone(&job)));
    let guard = RunningGuard { state, job };
    let job = &guard.job;
    if state.phase() == Phase::Stopping && !state.config().drain_on_shutdown {
        job.request_cancel(CancelReason::Shutdown);
    }
    let Some(work) = job.start() else {
        return;
    };
    tracing::info!(
        job = job.id(),
        images = work.params().num_images,
        "job started"
    );
    // The pictures decode here, so they are freed with the runnable job when
    // the closure returns, whatever the outcome.
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut work = work.into_runnable()?;
        generate_all(engine, state, job, &mut work)
    }))
    .unwrap_or_else(|panic| {
        Err(EngineError::Failed(format!(
            "engine panicked: {}",
            panic_message(&panic)
        )))
    });
    match outcome {
        Ok(()) => {
            job.finish_complete();
            state.record_generation_time(job);
            tracing::info!(job = job.id(), "job completed");
        }
        Err(EngineError::Cancelled) => {
            let reason = job.cancel_requested().unwrap_or(CancelReason::Client);
            job.finish_cancelled(reason);
            tracing::info!(job = job.id(), ?reason, "job cancelled");
        }
        Err(EngineError::InvalidRequest { field, message }) => {
            tracing::warn!(job = job.id(), %field, %message, "job rejected when it ran");
            job.finish_failed(ErrorDetail::field(
                ErrorCode::InvalidRequest,
                field,
                message,
            ));
        }
        Err(EngineError::Failed(message)) => {
            tracing::error!(job = job.id(), %message, "job failed");
            job.finish_failed(ErrorDetail::new(ErrorCode::GenerationFailed, message));
        }
    }
}

/// Makes the job's images (the engine batches them as it sees fit),
/// recording each as it is finished and every step's progress. The job's
/// cancel flag interrupts the engine wherever it is.
fn generate_all(
    engine: &mut dyn Engine,
    state: &AppState,
    job: &Job,
    work: &mut RunnableJob,
) -> Result<(), EngineError> {
    let cancel_requested = || job.cancel_requested().is_some();
    let interrupt = Interrupt::new(&cancel_requested);
    let mut on_step = |p: StepUpdate| {
        job.progress(p.step, p.total, p.preview);
        match job.cancel_requested() {
            Some(_) => ControlFlow::Break(()),
            None => ControlFlow::Continue(()),
        }
    };
    let mut index = 0;
    let mut on_image = |out: EngineOutput| {
        job.image_done(&out.png, out.width, out.height, out.seed);
        save_image(state, job, index, &out);
        index += 1;
    };
    engine.generate(work, interrupt, &mut on_step, &mut on_image)
}

/// Saves a finished image in `--output-dir`, when one is set; a file that
/// cannot be written is logged, and the job goes on.
fn save_image(state: &AppState, job: &Job, index: u32, out: &EngineOutput) {
    let Some(folder) = &state.config().output_dir else {
        return;
    };
    let image = FinishedImage {
        job_id: job.id(),
        index,
        seed: out.seed,
        width: out.width,
        height: out.height,
        png: &out.png,
        params: job.params(),
    };
    match OutputDir::new(folder).save(image, SystemTime::now()) {
        Ok(path) => tracing::info!(job = job.id(), path = %path.display(), "image saved"),
        Err(error) => tracing::error!(
            job = job.id(),
            folder = %folder.display(),
            %error,
            "could not save the image in --output-dir"
        ),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string())
}
