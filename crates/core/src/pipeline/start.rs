//! Where the denoising loop starts: seeded noise for text-to-image; for
//! image-to-image and inpainting the encoded picture noised to the strength's
//! first step, and what inpainting carries through the loop.

use candle_core::{DType, Tensor};

use super::output::ImageTrace;
use super::params::{DebugOptions, GenerateParams};
use super::StableDiffusion;
use crate::error::Result;
use crate::image::{prepare_image, prepare_mask};
use crate::interrupt::Interrupt;
use crate::rng::TorchRng;
use crate::schedulers::Scheduler;

impl StableDiffusion {
    /// The latents the loop starts from and what the loop needs besides them.
    ///
    /// Text-to-image: seeded noise times `init_noise_sigma`. Otherwise the
    /// generator draws, in diffusers' order: the picture's posterior sample
    /// (skipped by a 9-channel UNet at strength 1), the noise, then for
    /// inpainting the masked picture's posterior sample (drawn for 4-channel
    /// UNets too, which never use it). The VAE encodings stop once `interrupt`
    /// is raised.
    pub(super) fn prepare_start(
        &self,
        params: &GenerateParams,
        debug: &DebugOptions,
        scheduler: &dyn Scheduler,
        rng: &mut TorchRng,
        interrupt: Interrupt<'_>,
    ) -> Result<StartLatents> {
        let shape = self.latent_shape(params);
        let Some(input) = &params.image else {
            let noise = match &debug.init_latents {
                Some(latents) => latents.to_device(&self.device)?.to_dtype(DType::F32)?,
                None => rng.randn_tensor(&shape, &self.device)?,
            };
            return Ok(StartLatents {
                latents: (noise * scheduler.init_noise_sigma())?,
                first_step: 0,
                inpaint_channels: None,
                known_region: None,
                trace: None,
            });
        };
        let first_step = input.first_step(params.steps);
        let (width, height) = (params.width, params.height);
        let image_in = prepare_image(&input.image, width, height, &self.device)?;
        let mask_image = input
            .mask
            .as_ref()
            .map(|mask| prepare_mask(mask, width, height, &self.device))
            .transpose()?;
        let from_noise = mask_image.is_some() && input.strength == 1.0;
        let image_latents = if from_noise && self.is_inpainting() {
            None
        } else {
            Some(self.encode_sample(&image_in, rng, interrupt)?)
        };
        let noise = rng.randn_tensor(&shape, &self.device)?;
        let latents = match &image_latents {
            Some(image_latents) if !from_noise => {
                scheduler.add_noise(image_latents, &noise, first_step)?
            }
            _ => (&noise * scheduler.init_noise_sigma())?,
        };
        let mut start = StartLatents {
            latents,
            first_step,
            inpaint_channels: None,
            known_region: None,
            trace: None,
        };
        let (mut mask, mut masked_image_latents) = (None, None);
        if let Some(mask_image) = &mask_image {
            let keep = mask_image.affine(-1.0, 1.0)?;
            let masked_image = image_in.broadcast_mul(&keep)?;
            let masked_latents = self.encode_sample(&masked_image, rng, interrupt)?;
            let latent_mask = nearest_downsample(mask_image, self.vae_scale_factor())?;
            if self.is_inpainting() {
                start.inpaint_channels = Some(Tensor::cat(&[&latent_mask, &masked_latents], 1)?);
            } else if let Some(image_latents) = &image_latents {
                start.known_region = Some(KnownRegion {
                    image_latents: image_latents.clone(),
                    noise: noise.clone(),
                    mask: latent_mask.clone(),
                    steps: scheduler.timesteps().len(),
                });
            }
            mask = Some(latent_mask);
            masked_image_latents = Some(masked_latents);
        }
        start.trace = debug.trace.then_some(ImageTrace {
            image_in,
            image_latents,
            noise,
            mask_image,
            mask,
            masked_image_latents,
        });
        Ok(start)
    }

    /// Encodes an image in -1..1 to latents as diffusers' pipelines do: one
    /// sample of the posterior drawn from `rng`, shifted and scaled.
    fn encode_sample(
        &self,
        image: &Tensor,
        rng: &mut TorchRng,
        interrupt: Interrupt<'_>,
    ) -> Result<Tensor> {
        let (_, _, h, w) = image.dims4()?;
        let posterior = if self.tiles(h, w) {
            self.vae
                .encode_tiled(image, &self.tile_geometry, interrupt)?
        } else {
            self.vae.encode_interruptible(image, interrupt)?
        };
        let eps = rng.randn_tensor(posterior.mean.dims(), &self.device)?;
        let mut z = posterior.sample_with_noise(&eps)?;
        let config = self.vae.config();
        if let Some(shift) = config.shift_factor {
            z = (z - shift)?;
        }
        Ok((z * config.scaling_factor)?)
    }
}

/// Where the denoising loop starts and what it carries besides the latents.
pub(super) struct StartLatents {
    pub(super) latents: Tensor,
    /// Index into the scheduler's timesteps of the first step that runs.
    pub(super) first_step: usize,
    /// 9-channel UNets: the latent mask and masked-image latents `[1, 1 + C, h, w]`,
    /// concatenated to the scaled latents at every step.
    pub(super) inpaint_channels: Option<Tensor>,
    /// 4-channel inpainting: the region kept from the picture.
    pub(super) known_region: Option<KnownRegion>,
    /// The image-to-image intermediates, when a trace was asked for.
    pub(super) trace: Option<ImageTrace>,
}

/// The unmasked region of 4-channel inpainting, re-imposed after every step.
pub(super) struct KnownRegion {
    image_latents: Tensor,
    noise: Tensor,
    /// `[1, 1, h, w]`, 1 = repaint.
    mask: Tensor,
    /// Length of the scheduler's timestep list.
    steps: usize,
}

impl KnownRegion {
    /// `(1 − mask) · known + mask · latents`, where `known` is the picture's
    /// latents noised to the level of `next_step` (or clean after the last step).
    pub(super) fn reimpose(
        &self,
        latents: &Tensor,
        scheduler: &dyn Scheduler,
        next_step: usize,
    ) -> Result<Tensor> {
        let known = if next_step < self.steps {
            scheduler.add_noise(&self.image_latents, &self.noise, next_step)?
        } else {
            self.image_latents.clone()
        };
        let keep = self.mask.affine(-1.0, 1.0)?;
        Ok((known.broadcast_mul(&keep)? + latents.broadcast_mul(&self.mask)?)?)
    }
}

/// torch's `interpolate(mode="nearest")` by an integer factor: the top-left
/// pixel of each `factor`×`factor` block.
fn nearest_downsample(mask: &Tensor, factor: usize) -> Result<Tensor> {
    let (b, c, h, w) = mask.dims4()?;
    let (h, w) = (h / factor, w / factor);
    Ok(mask
        .reshape((b, c, h, factor, w, factor))?
        .narrow(3, 0, 1)?
        .narrow(5, 0, 1)?
        .reshape((b, c, h, w))?)
}
