//! The real engine: sd-core's Stable Diffusion pipeline behind [`Engine`].
//!
//! The loader resolves the model (a local diffusers folder, a Hugging Face
//! repo id or a single-file checkpoint, with `--vae` and the other model
//! flags), opens the device of the binary's backend and loads the pipeline,
//! all on the engine thread. Pipeline errors map onto engine errors: an
//! invalid parameter names its field (a 400-style `invalid_request` error
//! event), a cancellation ends the job as cancelled. Jobs that ask for a
//! preview get one on the steps [`LivePreviews`] picks. A job's LoRAs are
//! parsed (or taken from the [`LoraCache`]) and fused before it runs; a job
//! without LoRAs runs on the weights as loaded. On a GPU the loader also runs
//! one tiny generation before the worker reports ready (`warm_up`).

use std::time::Instant;

use sd_core::lora::ActiveLora;
use sd_core::model::{ModelProfile, WeightVariant};
use sd_core::pipeline::{BatchBudget, GenerateParams, StableDiffusion, VaeDecoder};
use sd_core::Interrupt;

use super::preview::{LivePreviews, PreviewSource};
use super::{Engine, EngineError, EngineLoader, EngineOutput, StepUpdate};
use crate::config::WorkerConfig;
use crate::loras::LoraCache;
use crate::validation::RunnableJob;

/// The loaded Stable Diffusion pipeline and the LoRAs recent jobs used.
pub struct SdEngine {
    pipeline: StableDiffusion,
    loras: LoraCache,
    /// The memory a job's images may take in one batched UNet pass.
    batch_budget: BatchBudget,
}

impl SdEngine {
    /// A loader for the configured model, backend, device and dtype.
    pub fn loader(config: &WorkerConfig) -> EngineLoader {
        let request = config
            .model_flags
            .request(&config.model, WeightVariant::Full);
        let (backend, ordinal, precision) =
            (config.backend, config.device as usize, config.precision);
        let lora_cache_bytes = config.lora_cache_bytes;
        let batch_budget = config.batch_budget;
        let decoding = config.decoding.clone();
        let embeddings = config.embeddings.clone();
        Box::new(move || {
            let device = backend
                .open_device(ordinal)
                .map_err(|e| EngineError::Failed(e.to_string()))?;
            let request = request.map_err(|e| EngineError::Failed(e.to_string()))?;
            tracing::info!(
                model = %request.model,
                ?device,
                weights = precision.weights.as_str(),
                compute = precision.compute.as_str(),
                "loading the pipeline"
            );
            let options = precision.load_options(WeightVariant::Full);
            let mut pipeline =
                StableDiffusion::load_request(&request, &device, options).map_err(load_error)?;
            decoding
                .apply(&mut pipeline)
                .map_err(|e| EngineError::Failed(e.to_string()))?;
            if let Some(dir) = &embeddings {
                let unfit = pipeline.set_embeddings(dir.set()).map_err(load_error)?;
                dir.record_unfit(unfit);
            }
            if !device.is_cpu() {
                warm_up(&mut pipeline);
            }
            let loras = LoraCache::new(lora_cache_bytes);
            Ok(Box::new(SdEngine {
                pipeline,
                loras,
                batch_budget,
            }) as Box<dyn Engine>)
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
        on_image: &mut dyn FnMut(EngineOutput),
    ) -> Result<(), EngineError> {
        self.apply_loras(job)?;
        let params = job.generation();
        let source = match self.pipeline.tiny_vae() {
            Some(tiny) => PreviewSource::TinyDecoder(tiny),
            None => PreviewSource::Projection(self.pipeline.family().latent_format()),
        };
        let mut previews = job.wants_preview().then(|| LivePreviews::new(source));
        let plan = self
            .pipeline
            .batch_plan(params, job.num_images() as usize, self.batch_budget);
        tracing::debug!(images = plan.images, per_pass = plan.per_pass, "batch plan");
        let mut last = Instant::now();
        self.pipeline
            .generate_batch(
                params,
                plan,
                interrupt,
                &mut |s| {
                    let elapsed = last.elapsed();
                    let preview = previews.as_mut().and_then(|p| p.after_step(&s, elapsed));
                    let flow = on_step(StepUpdate {
                        step: s.step,
                        total: s.total,
                        preview,
                    });
                    last = Instant::now();
                    flow
                },
                &mut |_, image| {
                    on_image(EngineOutput {
                        png: image.png,
                        width: image.width as u32,
                        height: image.height as u32,
                        seed: image.seed,
                    })
                },
            )
            .map_err(|e| engine_error(e, job))
    }
}

impl SdEngine {
    /// Fuses the job's LoRAs into the model (none: the weights as loaded).
    /// A file that is no LoRA, or one for another kind of model, is an
    /// invalid request naming the job's field and the LoRA by its name.
    fn apply_loras(&mut self, job: &RunnableJob) -> Result<(), EngineError> {
        let mut active = Vec::with_capacity(job.loras().len());
        for (i, lora) in job.loras().iter().enumerate() {
            let adapter = self
                .loras
                .get(&lora.path)
                .map_err(|e| lora_error(e, i, &lora.name, &lora.path))?;
            active.push(ActiveLora {
                adapter,
                strength: lora.strength,
            });
        }
        self.pipeline.set_loras(&active).map_err(|e| {
            let at = match &e {
                sd_core::Error::Lora { path, .. } => {
                    job.loras().iter().position(|l| &l.path == path)
                }
                _ => None,
            };
            match at {
                Some(i) => lora_error(e, i, &job.loras()[i].name, &job.loras()[i].path),
                None => engine_error(e, job),
            }
        })
    }
}

/// A LoRA that cannot be read or applied, named as the job named it (the
/// worker's own paths stay out of the message).
fn lora_error(
    err: sd_core::Error,
    index: usize,
    name: &str,
    path: &std::path::Path,
) -> EngineError {
    match err {
        sd_core::Error::Lora { message, .. } => EngineError::InvalidRequest {
            field: format!("loras[{index}].path"),
            message: format!("LoRA {name:?}: {message}"),
        },
        other => EngineError::InvalidRequest {
            field: format!("loras[{index}].path"),
            message: other
                .to_string()
                .replace(&path.display().to_string(), &format!("{name:?}")),
        },
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
