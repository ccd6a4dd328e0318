//! The denoising loop: text encoding, guided UNet passes with scheduler
//! steps, VAE decoding and the PNG, for every kind of generation.

use std::ops::ControlFlow;
use std::time::Instant;

use candle_core::Tensor;

use super::output::{GeneratedImage, StageTimings, StepProgress, Trace};
use super::params::{DebugOptions, GenerateParams};
use super::StableDiffusion;
use crate::error::{Error, Param, Result};
use crate::image::{encode_png, to_rgb8, GenerationSettings};
use crate::interrupt::Interrupt;
use crate::model::ModelFamily;
use crate::rng::TorchRng;
use crate::schedulers::build_scheduler;
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
        let mut timings = StageTimings::default();
        let guided = params.guidance_scale > 1.0;

        let started = Instant::now();
        let encoding = params.prompt_encoding();
        let mut prompt = self
            .text
            .encode_interruptible(&params.prompt, encoding, interrupt)?;
        let negative = if guided {
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
        let batch = |cond: &Tensor, uncond: Option<&Tensor>| -> Result<Tensor> {
            Ok(match uncond {
                Some(uncond) => Tensor::cat(&[uncond, cond], 0)?,
                None => cond.clone(),
            })
        };
        let context = batch(&prompt.hidden, negative.as_ref().map(|n| &n.hidden))?;
        let add_time_ids = match self.family {
            ModelFamily::Sdxl => Some(self.add_time_ids(params)?),
            _ => None,
        };
        let added = match (&prompt.pooled, &add_time_ids) {
            (Some(pooled), Some(time_ids)) => Some(AddedCond {
                text_embeds: batch(pooled, negative.as_ref().and_then(|n| n.pooled.as_ref()))?,
                time_ids: batch(time_ids, negative.as_ref().map(|_| time_ids))?,
            }),
            _ => None,
        };
        self.device.synchronize()?;
        timings.text_encoding = started.elapsed();

        let started = Instant::now();
        let kind = params.scheduler.unwrap_or(self.default_scheduler);
        let mut scheduler =
            build_scheduler(params.scheduler, &self.scheduler_config, params.steps)?;
        let mut rng = TorchRng::new(params.seed);
        let start = self.prepare_start(params, debug, scheduler.as_ref(), &mut rng, interrupt)?;
        let timesteps = scheduler.timesteps().to_vec();
        let total = timesteps.len() - start.first_step;
        let inpaint_input = start
            .inpaint_channels
            .as_ref()
            .map(|c| batch(c, guided.then_some(c)))
            .transpose()?;
        let mut latents = start.latents.clone();
        for (index, &timestep) in timesteps.iter().enumerate().skip(start.first_step) {
            let input = batch(&latents, guided.then_some(&latents))?;
            let mut input = scheduler.scale_model_input(&input, index)?;
            if let Some(extra) = &inpaint_input {
                input = Tensor::cat(&[&input, extra], 1)?;
            }
            let prediction = self.unet.forward_interruptible(
                &input,
                timestep,
                &context,
                added.as_ref(),
                interrupt,
            )?;
            let prediction = if guided {
                let unconditional = prediction.narrow(0, 0, 1)?;
                let conditional = prediction.narrow(0, 1, 1)?;
                let difference = (conditional - &unconditional)?;
                (unconditional + (difference * params.guidance_scale)?)?
            } else {
                prediction
            };
            latents = scheduler.step(&prediction, index, &latents, &mut rng)?;
            if let Some(known) = &start.known_region {
                latents = known.reimpose(&latents, scheduler.as_ref(), index + 1)?;
            }
            if on_step(StepProgress {
                step: index + 1 - start.first_step,
                total,
                latents: &latents,
                predicted_original: scheduler.predicted_original(),
            })
            .is_break()
            {
                return Err(Error::Cancelled);
            }
        }
        self.device.synchronize()?;
        timings.denoising = started.elapsed();

        let started = Instant::now();
        let image = self.decode_latents(&latents, params.decoder, interrupt)?;
        let rgb = to_rgb8(&image)?;
        let settings = GenerationSettings {
            prompt: params.prompt.clone(),
            negative_prompt: params.negative_prompt.clone(),
            steps: params.steps,
            sampler: kind.a1111_name().to_string(),
            guidance_scale: params.guidance_scale,
            seed: params.seed,
            width: params.width,
            height: params.height,
            model: self.name.clone(),
            model_hash: self.model_hash.clone(),
            denoising_strength: params.image.as_ref().map(|input| input.strength),
            clip_skip: params.clip_skip,
        };
        let png = encode_png(&rgb, params.width, params.height, Some(&settings))?;
        timings.decoding = started.elapsed();

        let trace = debug.trace.then(|| Trace {
            prompt_embeds: prompt.hidden,
            pooled_prompt_embeds: prompt.pooled,
            negative_prompt_embeds: negative.as_ref().map(|n| n.hidden.clone()),
            negative_pooled_prompt_embeds: negative.and_then(|n| n.pooled),
            add_time_ids,
            timesteps: timesteps[start.first_step..].to_vec(),
            latents_start: start.latents,
            image_input: start.trace,
            latents_final: latents,
            image,
        });
        Ok(GeneratedImage {
            width: params.width,
            height: params.height,
            rgb,
            png,
            seed: params.seed,
            scheduler: kind,
            steps_run: total,
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
