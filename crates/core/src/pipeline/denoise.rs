//! The denoising loop: text encoding, guided UNet passes with scheduler
//! steps, VAE decoding and the PNG, for every kind of generation.

use std::ops::ControlFlow;
use std::time::Instant;

use candle_core::Tensor;

use super::batch::{BatchPlan, BatchProgress};
use super::output::{GeneratedImage, StageTimings, StepProgress, Trace};
use super::params::{DebugOptions, GenerateParams};
use super::start::StartLatents;
use super::StableDiffusion;
use crate::error::{Error, Param, Result};
use crate::image::{encode_png, to_rgb8, GenerationSettings};
use crate::interrupt::Interrupt;
use crate::model::ModelFamily;
use crate::prompt::PromptEmbeds;
use crate::rng::TorchRng;
use crate::schedulers::build_scheduler;
use crate::schedulers::Scheduler;
use crate::unet::AddedCond;

impl StableDiffusion {
    /// Generates one image. `on_step` runs after every denoising step, with the
    /// latents for a live preview; returning `ControlFlow::Break` stops the
    /// loop with [`Error::Cancelled`]. A raised `interrupt` stops it sooner,
    /// with the same error: inside text encoding, inside one UNet pass, inside
    /// the VAE's encoding or decoding (see [`crate::interrupt`]).
    pub fn generate(
        &mut self,
        params: &GenerateParams,
        interrupt: Interrupt<'_>,
        on_step: &mut dyn FnMut(StepProgress<'_>) -> ControlFlow<()>,
    ) -> Result<GeneratedImage> {
        self.generate_with(params, &DebugOptions::default(), interrupt, on_step)
    }

    /// [`StableDiffusion::generate`] with parity-check options: given start
    /// latents, and the intermediate tensors kept in the result.
    pub fn generate_with(
        &mut self,
        params: &GenerateParams,
        debug: &DebugOptions,
        interrupt: Interrupt<'_>,
        on_step: &mut dyn FnMut(StepProgress<'_>) -> ControlFlow<()>,
    ) -> Result<GeneratedImage> {
        params.check(&self.profile())?;
        self.check_debug(params, debug)?;
        let started = Instant::now();
        let conditioning = self.condition(params, interrupt)?;
        self.device.synchronize()?;
        let text_encoding = started.elapsed();
        let started = Instant::now();
        let mut progress = BatchProgress::new(1, self.asked_steps_per_image(params));
        let run = self
            .denoise(
                params,
                debug,
                &conditioning,
                &[params.seed],
                interrupt,
                &mut progress,
                on_step,
            )?
            .remove(0);
        self.device.synchronize()?;
        let timings = StageTimings {
            text_encoding,
            denoising: started.elapsed(),
            decoding: Default::default(),
        };
        self.finish_image(params, debug, &conditioning, run, timings, interrupt)
    }

    /// Generates `plan.images` images with the seeds `params.seed`,
    /// `params.seed + 1`, … (wrapping), each the image a generation of one with
    /// its seed makes: its own noise and scheduler, the prompts encoded once.
    /// Up to `plan.per_pass` images share each UNet pass. `on_step` counts the
    /// steps of all the images (a pass of `n` images advances `n` steps) and
    /// shows the first image of the pass; `on_image` receives each finished
    /// image with its index, decoded one at a time. Stops as
    /// [`StableDiffusion::generate`] does.
    pub fn generate_batch(
        &mut self,
        params: &GenerateParams,
        plan: BatchPlan,
        interrupt: Interrupt<'_>,
        on_step: &mut dyn FnMut(StepProgress<'_>) -> ControlFlow<()>,
        on_image: &mut dyn FnMut(usize, GeneratedImage),
    ) -> Result<()> {
        params.check(&self.profile())?;
        let debug = DebugOptions::default();
        let started = Instant::now();
        let conditioning = self.condition(params, interrupt)?;
        self.device.synchronize()?;
        let mut text_encoding = Some(started.elapsed());
        let mut progress = BatchProgress::new(plan.images, self.asked_steps_per_image(params));
        let mut first = 0;
        while first < plan.images {
            let count = plan.per_pass.max(1).min(plan.images - first);
            let started = Instant::now();
            let seeds: Vec<u64> = (first..first + count)
                .map(|i| params.seed.wrapping_add(i as u64))
                .collect();
            let runs = self.denoise(
                params,
                &debug,
                &conditioning,
                &seeds,
                interrupt,
                &mut progress,
                on_step,
            )?;
            self.device.synchronize()?;
            let denoising = started.elapsed() / count as u32;
            for (offset, run) in runs.into_iter().enumerate() {
                let timings = StageTimings {
                    text_encoding: text_encoding.take().unwrap_or_default(),
                    denoising,
                    decoding: Default::default(),
                };
                let image =
                    self.finish_image(params, &debug, &conditioning, run, timings, interrupt)?;
                on_image(first + offset, image);
            }
            first += count;
        }
        Ok(())
    }

    /// How many steps one image of `params` counts in the progress: the
    /// steps asked for (from a picture, those its strength runs), not UNet
    /// passes, of which PNDM makes one more.
    fn asked_steps_per_image(&self, params: &GenerateParams) -> usize {
        let first_step = params
            .image
            .as_ref()
            .map_or(0, |input| input.first_step(params.steps));
        params.steps - first_step
    }

    /// Encodes the prompts once for every image: the conditional (and, when
    /// guided, unconditional) embeddings and SDXL's added conditioning.
    fn condition(
        &mut self,
        params: &GenerateParams,
        interrupt: Interrupt<'_>,
    ) -> Result<Conditioning> {
        let encoding = params.prompt_encoding();
        let mut prompt = self
            .text
            .encode_interruptible(&params.prompt, encoding, interrupt)?;
        let negative = if params.guided() {
            let (negative, padded) = self.encode_negative_until(
                params.negative_prompt.as_deref(),
                prompt,
                encoding,
                interrupt,
            )?;
            prompt = padded;
            Some(negative)
        } else {
            None
        };
        let add_time_ids = match self.family {
            ModelFamily::Sdxl => Some(self.add_time_ids(params)?),
            _ => None,
        };
        Ok(Conditioning {
            prompt,
            negative,
            add_time_ids,
        })
    }

    /// Runs the denoising loop for the images of `seeds` together: each has
    /// its own generator, start latents and scheduler (so its noise and any
    /// ancestral draws are those of a generation of one), while the UNet sees
    /// them as one batch `[unconditional × n, conditional × n]` when guided.
    #[allow(clippy::too_many_arguments)]
    fn denoise(
        &mut self,
        params: &GenerateParams,
        debug: &DebugOptions,
        conditioning: &Conditioning,
        seeds: &[u64],
        interrupt: Interrupt<'_>,
        progress: &mut BatchProgress,
        on_step: &mut dyn FnMut(StepProgress<'_>) -> ControlFlow<()>,
    ) -> Result<Vec<ImageRun>> {
        let count = seeds.len();
        let guided = params.guided();
        let mut runs = Vec::with_capacity(count);
        for &seed in seeds {
            let scheduler =
                build_scheduler(params.scheduler, &self.scheduler_config, params.steps)?;
            let mut rng = TorchRng::new(seed);
            let start =
                self.prepare_start(params, debug, scheduler.as_ref(), &mut rng, interrupt)?;
            runs.push(ImageRun {
                seed,
                latents: start.latents.clone(),
                scheduler,
                rng,
                start,
            });
        }
        let batch = |cond: &Tensor, uncond: Option<&Tensor>| -> Result<Tensor> {
            let mut parts = Vec::with_capacity(2 * count);
            if let Some(uncond) = uncond {
                parts.extend(std::iter::repeat_n(uncond, count));
            }
            parts.extend(std::iter::repeat_n(cond, count));
            Ok(Tensor::cat(&parts, 0)?)
        };
        let negative = conditioning.negative.as_ref();
        let context = batch(&conditioning.prompt.hidden, negative.map(|n| &n.hidden))?;
        let added = match (&conditioning.prompt.pooled, &conditioning.add_time_ids) {
            (Some(pooled), Some(time_ids)) => Some(AddedCond {
                text_embeds: batch(pooled, negative.and_then(|n| n.pooled.as_ref()))?,
                time_ids: batch(time_ids, negative.map(|_| time_ids))?,
            }),
            _ => None,
        };
        let inpaint_input = match runs[0].start.inpaint_channels {
            Some(_) => {
                let channels = runs
                    .iter()
                    .filter_map(|run| run.start.inpaint_channels.as_ref())
                    .collect::<Vec<_>>();
                let channels = Tensor::cat(&channels, 0)?;
                Some(match guided {
                    true => Tensor::cat(&[&channels, &channels], 0)?,
                    false => channels,
                })
            }
            None => None,
        };
        let first_step = runs[0].start.first_step;
        let timesteps = runs[0].scheduler.timesteps().to_vec();
        let passes = timesteps.len() - first_step;
        let asked = params.steps - first_step;
        for (index, &timestep) in timesteps.iter().enumerate().skip(first_step) {
            let scaled = runs
                .iter()
                .map(|run| run.scheduler.scale_model_input(&run.latents, index))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let scaled = Tensor::cat(&scaled, 0)?;
            let mut input = match guided {
                true => Tensor::cat(&[&scaled, &scaled], 0)?,
                false => scaled,
            };
            if let Some(extra) = &inpaint_input {
                input = Tensor::cat(&[&input, extra], 1)?;
            }
            let prediction = self.unet()?.forward_interruptible(
                &input,
                timestep,
                &context,
                added.as_ref(),
                interrupt,
            )?;
            for (i, run) in runs.iter_mut().enumerate() {
                let prediction = if guided {
                    let unconditional = prediction.narrow(0, i, 1)?;
                    let conditional = prediction.narrow(0, count + i, 1)?;
                    let difference = (conditional - &unconditional)?;
                    (unconditional + (difference * params.guidance_scale)?)?
                } else {
                    prediction.narrow(0, i, 1)?
                };
                let mut latents =
                    run.scheduler
                        .step(&prediction, index, &run.latents, &mut run.rng)?;
                if let Some(known) = &run.start.known_region {
                    latents = known.reimpose(&latents, run.scheduler.as_ref(), index + 1)?;
                }
                run.latents = latents;
            }
            // Each image's steps advance in asked steps: when the scheduler
            // makes more passes than that, one step is reported twice.
            let pass = index + 1 - first_step;
            if on_step(StepProgress {
                step: progress.done + count * (pass * asked).div_ceil(passes),
                total: progress.total,
                latents: &runs[0].latents,
                predicted_original: runs[0].scheduler.predicted_original(),
            })
            .is_break()
            {
                return Err(Error::Cancelled);
            }
        }
        progress.done += count * asked;
        Ok(runs)
    }

    /// Decodes one image's final latents, writes its PNG and, when asked, its trace.
    fn finish_image(
        &self,
        params: &GenerateParams,
        debug: &DebugOptions,
        conditioning: &Conditioning,
        run: ImageRun,
        mut timings: StageTimings,
        interrupt: Interrupt<'_>,
    ) -> Result<GeneratedImage> {
        let started = Instant::now();
        let kind = params.scheduler.unwrap_or(self.default_scheduler);
        let image = self.decode_latents(&run.latents, params.decoder, interrupt)?;
        let rgb = to_rgb8(&image)?;
        let settings = GenerationSettings {
            prompt: params.prompt.clone(),
            negative_prompt: params.negative_prompt.clone(),
            steps: params.steps,
            sampler: kind.a1111_name().to_string(),
            guidance_scale: params.guidance_scale,
            seed: run.seed,
            width: params.width,
            height: params.height,
            model: self.name.clone(),
            model_hash: self.model_hash.clone(),
            denoising_strength: params.image.as_ref().map(|input| input.strength),
            clip_skip: params.clip_skip,
        };
        let png = encode_png(&rgb, params.width, params.height, Some(&settings))?;
        timings.decoding = started.elapsed();

        let first_step = run.start.first_step;
        let timesteps = run.scheduler.timesteps();
        let steps_run = timesteps.len() - first_step;
        let trace = debug.trace.then(|| Trace {
            prompt_embeds: conditioning.prompt.hidden.clone(),
            pooled_prompt_embeds: conditioning.prompt.pooled.clone(),
            negative_prompt_embeds: conditioning.negative.as_ref().map(|n| n.hidden.clone()),
            negative_pooled_prompt_embeds: conditioning
                .negative
                .as_ref()
                .and_then(|n| n.pooled.clone()),
            add_time_ids: conditioning.add_time_ids.clone(),
            timesteps: timesteps[first_step..].to_vec(),
            latents_start: run.start.latents,
            image_input: run.start.trace,
            latents_final: run.latents,
            image,
        });
        Ok(GeneratedImage {
            width: params.width,
            height: params.height,
            rgb,
            png,
            seed: run.seed,
            scheduler: kind,
            steps_run,
            timings,
            trace,
        })
    }

    /// Given start latents must have the latents' shape and come without a picture.
    fn check_debug(&self, params: &GenerateParams, debug: &DebugOptions) -> Result<()> {
        let Some(latents) = &debug.init_latents else {
            return Ok(());
        };
        if params.image.is_some() {
            return Err(Error::param(
                Param::InitLatents,
                "cannot be combined with a picture to start from",
            ));
        }
        let expected = self.latent_shape(params);
        if latents.dims() != expected {
            return Err(Error::param(
                Param::InitLatents,
                format!("expected shape {expected:?}, got {:?}", latents.dims()),
            ));
        }
        Ok(())
    }

    /// The shape of the latents `[1, C, H/f, W/f]` of an image of the params' size.
    pub(super) fn latent_shape(&self, params: &GenerateParams) -> [usize; 4] {
        let factor = self.vae_scale_factor();
        [
            1,
            self.vae.config().latent_channels,
            params.height / factor,
            params.width / factor,
        ]
    }

    /// SDXL's size conditioning: original size, crop top-left, target size, `[1, 6]`.
    fn add_time_ids(&self, params: &GenerateParams) -> Result<Tensor> {
        let (h, w) = (params.height as f32, params.width as f32);
        Ok(Tensor::from_vec(
            vec![h, w, 0.0, 0.0, h, w],
            (1, 6),
            &self.device,
        )?)
    }
}

/// The prompts' encodings every image of a generation shares.
struct Conditioning {
    prompt: PromptEmbeds,
    /// The negative prompt's, when guided.
    negative: Option<PromptEmbeds>,
    /// SDXL's size conditioning `[1, 6]`.
    add_time_ids: Option<Tensor>,
}

/// One image of a denoising pass: its seed, generator, scheduler and latents.
struct ImageRun {
    seed: u64,
    latents: Tensor,
    scheduler: Box<dyn Scheduler>,
    rng: TorchRng,
    start: StartLatents,
}
