//! The real engine: sd-core's Stable Diffusion pipeline behind [`Engine`].
//!
//! The loader resolves the model (a local diffusers folder or a Hugging Face
//! repo id), opens the device of the binary's backend and loads the pipeline,
//! all on the engine thread. Pipeline errors map onto engine errors: an
//! invalid parameter names its field (a 400-style `invalid_request` error
//! event), a cancellation ends the job as cancelled. Jobs that ask for a
//! preview get one on the steps [`LivePreviews`] picks. On a GPU the loader
//! also runs one tiny generation before the worker reports ready (`warm_up`).

use std::time::Instant;

use sd_core::model::hub::resolve_model;
use sd_core::model::{model_name, LoadOptions, ModelProfile, WeightVariant};
use sd_core::pipeline::{GenerateParams, StableDiffusion, VaeDecoder};
use sd_core::Interrupt;

use super::preview::{LivePreviews, PreviewSource};
use super::{Engine, EngineError, EngineLoader, EngineOutput, StepUpdate};
use crate::config::WorkerConfig;
use crate::validation::RunnableJob;

/// The loaded Stable Diffusion pipeline.
pub struct SdEngine {
    pipeline: StableDiffusion,
}

impl SdEngine {
    /// A loader for the configured model, backend, device and dtype.
    pub fn loader(config: &WorkerConfig) -> EngineLoader {
        let spec = config.model.clone();
        let (backend, ordinal, dtype) = (config.backend, config.device as usize, config.dtype);
        let decoding = config.decoding.clone();
        Box::new(move || {
            let device = backend
                .open_device(ordinal)
                .map_err(|e| EngineError::Failed(e.to_string()))?;
            let folder = resolve_model(&spec, WeightVariant::Full).map_err(load_error)?;
            tracing::info!(folder = %folder.display(), ?device, dtype = dtype.as_str(), "loading the pipeline");
            let options = LoadOptions {
                variant: WeightVariant::Full,
                weight_dtype: dtype.storage(),
            };
            let mut pipeline =
                StableDiffusion::load_with(&folder, &device, options).map_err(load_error)?;
            pipeline.set_name(model_name(&spec));
            decoding
                .apply(&mut pipeline)
                .map_err(|e| EngineError::Failed(e.to_string()))?;
            if !device.is_cpu() {
                warm_up(&mut pipeline);
            }
            Ok(Box::new(SdEngine { pipeline }) as Box<dyn Engine>)
        })
    }
}

/// Runs one 64×64, two-step, guided generation and throws it away. The GPU
/// driver compiles each of candle's kernels on its first use, which on a fresh
/// machine takes many seconds (about 16 s on an H200); doing it here moves that
/// wait before readiness instead of into the first job. A failure is only logged:
/// jobs would then pay the compilation themselves.
fn warm_up(pipeline: &mut StableDiffusion) {
    let started = Instant::now();
    let params = GenerateParams {
        prompt: String::new(),
        negative_prompt: None,
        prompt_syntax: sd_core::prompt::PromptSyntax::Plain,
        clip_skip: 0,
        steps: 2,
        guidance_scale: 2.0,
        width: 64,
        height: 64,
        seed: 0,
        scheduler: None,
        image: None,
        decoder: VaeDecoder::Full,
    };
    match pipeline.generate(&params, Interrupt::NEVER, &mut |_| {
        std::ops::ControlFlow::Continue(())
    }) {
        Ok(_) => tracing::info!(elapsed = ?started.elapsed(), "GPU kernels warmed up"),
        Err(e) => {
            tracing::warn!(error = %e, "warm-up generation failed; the first job will compile the GPU kernels")
        }
    }
}

impl Engine for SdEngine {
    fn profile(&self) -> ModelProfile {
        self.pipeline.profile()
    }

    fn generate(
        &mut self,
        job: &RunnableJob,
        interrupt: Interrupt<'_>,
        on_step: &mut dyn FnMut(StepUpdate) -> std::ops::ControlFlow<()>,
    ) -> Result<EngineOutput, EngineError> {
        let params = job.generation();
        let source = match self.pipeline.tiny_vae() {
            Some(tiny) => PreviewSource::TinyDecoder(tiny),
            None => PreviewSource::Projection(self.pipeline.family().latent_format()),
        };
        let mut previews = job.wants_preview().then(|| LivePreviews::new(source));
        let mut last = Instant::now();
        let image = self
            .pipeline
            .generate(params, interrupt, &mut |s| {
                let elapsed = last.elapsed();
                let preview = previews.as_mut().and_then(|p| p.after_step(&s, elapsed));
                let flow = on_step(StepUpdate {
                    step: s.step,
                    total: s.total,
                    preview,
                });
                last = Instant::now();
                flow
            })
            .map_err(|e| engine_error(e, job))?;
        Ok(EngineOutput {
            png: image.png,
            width: image.width as u32,
            height: image.height as u32,
            seed: image.seed,
        })
    }
}

/// A model that cannot be resolved or loaded; the message names the file or tensor.
fn load_error(err: sd_core::Error) -> EngineError {
    EngineError::Failed(err.to_string())
}

/// An engine error; a parameter the pipeline rejects (the scheduler's own
/// step limits) names the job's request field.
fn engine_error(err: sd_core::Error, job: &RunnableJob) -> EngineError {
    match err {
        sd_core::Error::Param(e) => EngineError::InvalidRequest {
            field: job.field_of(e.param).to_string(),
            message: e.message,
        },
        sd_core::Error::Cancelled => EngineError::Cancelled,
        other => EngineError::Failed(other.to_string()),
    }
}
