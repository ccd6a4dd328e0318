//! What a generation is asked to do, and the one place those parameters are
//! checked against the model.
//!
//! Every entry point (the worker's requests, the `generate` command, tests)
//! builds a [`GenerateParams`] and calls [`GenerateParams::check`] with the
//! loaded model's [`ModelProfile`]; an error names the [`Param`] at fault and
//! the caller translates that to its own spelling.

use candle_core::Tensor;

use crate::error::{Param, ParamError};
use crate::image::DecodedImage;
use crate::model::ModelProfile;
use crate::prompt::{check_clip_skip, PromptEncoding, PromptSyntax};
use crate::schedulers::SchedulerKind;

/// Strength diffusers' image-to-image pipeline uses by default.
pub const DEFAULT_IMG2IMG_STRENGTH: f64 = 0.8;
/// Strength diffusers' SD inpainting pipeline uses by default (start from pure noise).
pub const DEFAULT_INPAINT_STRENGTH: f64 = 1.0;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    /// What to draw.
    pub prompt: String,
    /// What to steer away from; `None` behaves like diffusers' default (an empty prompt).
    pub negative_prompt: Option<String>,
    /// How both prompts are read.
    pub prompt_syntax: PromptSyntax,
    /// How many of the text encoders' last layers both prompts skip
    /// (diffusers' `clip_skip`, [`PromptEncoding::clip_skip`]); 0 skips none.
    pub clip_skip: usize,
    /// Denoising steps asked for (PNDM runs one UNet pass more).
    pub steps: usize,
    /// Classifier-free guidance scale; at 1 or below only the conditional pass runs.
    pub guidance_scale: f64,
    /// Image width in pixels, a multiple of the VAE scale factor.
    pub width: usize,
    /// Image height in pixels, a multiple of the VAE scale factor.
    pub height: usize,
    /// Seed of torch's CPU generator that draws every noise tensor.
    pub seed: u64,
    /// Scheduler to use; `None` uses the model's own.
    pub scheduler: Option<SchedulerKind>,
    /// A picture to start from (image-to-image), with a mask for inpainting;
    /// `None` generates from the prompt alone.
    pub image: Option<ImageInput>,
    /// Which autoencoder decodes the final latents.
    pub decoder: VaeDecoder,
}

/// Which autoencoder turns the final latents into the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VaeDecoder {
    /// The model's own `AutoencoderKL`.
    #[default]
    Full,
    /// The tiny autoencoder loaded beside the model (TAESD): many times
    /// faster, close to but not the same as the full decode.
    Tiny,
}

/// The picture (and for inpainting, the mask) an image-to-image or inpainting
/// generation starts from. Both are resized to the output size with PIL's
/// Lanczos when their size differs.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInput {
    /// The picture to start from, in any mode (converted to RGB).
    pub image: DecodedImage,
    /// The inpainting mask, white = repaint, the same size as `image`.
    pub mask: Option<DecodedImage>,
    /// How much to change the picture, 0..=1: the share of the schedule that
    /// runs (1 starts from noise; inpainting at 1 ignores the picture under the mask).
    pub strength: f64,
}

/// What a caller may add to a generation for parity checks against diffusers.
#[derive(Debug, Clone, Default)]
pub struct DebugOptions {
    /// Latents `[1, C, H/8, W/8]` replacing the seeded noise (diffusers' `latents=`).
    pub init_latents: Option<Tensor>,
    /// Keep the intermediate tensors in [`super::GeneratedImage::trace`].
    pub trace: bool,
}

impl GenerateParams {
    /// Whether classifier-free guidance runs (a scale above 1): the UNet then
    /// also sees the negative prompt.
    pub fn guided(&self) -> bool {
        self.guidance_scale > 1.0
    }

    /// How both prompts are encoded: [`Self::prompt_syntax`] and [`Self::clip_skip`].
    pub fn prompt_encoding(&self) -> PromptEncoding {
        PromptEncoding {
            syntax: self.prompt_syntax,
            clip_skip: self.clip_skip,
        }
    }

    /// Checks the parameters against the model that will run them: sizes in
    /// whole latent cells, a step count the scheduler runs on the model's
    /// scheduler config ([`crate::schedulers::StepLimits`]), a usable guidance scale, and for
    /// a picture its strength, its mask and at least one step that runs, and a
    /// `clip_skip` the text encoders have layers for. An inpainting model
    /// needs a picture and a mask.
    pub fn check(&self, model: &ModelProfile) -> Result<(), ParamError> {
        check_clip_skip(self.clip_skip, model.max_clip_skip)?;
        if self.decoder == VaeDecoder::Tiny && !model.tiny_decoder {
            return Err(ParamError::new(
                Param::Decoder,
                "asks for the tiny autoencoder, but this model has none loaded",
            ));
        }
        let factor = model.vae_scale_factor;
        for (param, value) in [(Param::Width, self.width), (Param::Height, self.height)] {
            if value == 0 || value % factor != 0 {
                return Err(ParamError::new(
                    param,
                    format!("must be a positive multiple of {factor}, got {value}"),
                ));
            }
        }
        if self.steps == 0 {
            return Err(ParamError::new(Param::Steps, "must be at least 1"));
        }
        let scheduler = self.scheduler.unwrap_or(model.scheduler);
        model.step_limits.check(Some(scheduler), self.steps)?;
        if !self.guidance_scale.is_finite() || self.guidance_scale < 0.0 {
            return Err(ParamError::new(
                Param::GuidanceScale,
                format!("must be a finite number >= 0, got {}", self.guidance_scale),
            ));
        }
        match &self.image {
            Some(input) => {
                input.check()?;
                input.steps_run(self.steps)?;
                if input.mask.is_none() && model.inpainting {
                    return Err(inpainting_needs(Param::Mask, "a mask"));
                }
                Ok(())
            }
            None if model.inpainting => Err(inpainting_needs(Param::Mask, "a picture and a mask")),
            None => Ok(()),
        }
    }
}

fn inpainting_needs(param: Param, what: &str) -> ParamError {
    ParamError::new(
        param,
        format!("this model has an inpainting UNet (9 input channels): it needs {what}"),
    )
}

impl ImageInput {
    /// Checks what needs no model: strength within 0..=1 and a mask of the
    /// picture's size.
    pub fn check(&self) -> Result<(), ParamError> {
        let strength = self.strength;
        if !(0.0..=1.0).contains(&strength) {
            return Err(ParamError::new(
                Param::Strength,
                format!("must be between 0 and 1, got {strength}"),
            ));
        }
        let size = (self.image.width(), self.image.height());
        match &self.mask {
            Some(mask) if (mask.width(), mask.height()) != size => Err(ParamError::new(
                Param::Mask,
                format!(
                    "is {}x{} but the picture is {}x{}; they must be the same size",
                    mask.width(),
                    mask.height(),
                    size.0,
                    size.1
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The output size diffusers picks when none is given: the picture's,
    /// rounded down to multiples of `multiple` (the VAE scale factor).
    pub fn default_size(&self, multiple: usize) -> Result<(usize, usize), ParamError> {
        match self.image.size_rounded_down(multiple) {
            (0, _) | (_, 0) => Err(ParamError::new(
                Param::Image,
                format!(
                    "is {}x{}; it must be at least {multiple}x{multiple} pixels",
                    self.image.width(),
                    self.image.height()
                ),
            )),
            size => Ok(size),
        }
    }

    /// How many of `steps` run at this strength (`floor(steps · strength)`,
    /// before PNDM's extra pass); none is an error naming the strength.
    pub fn steps_run(&self, steps: usize) -> Result<usize, ParamError> {
        match steps - self.first_step(steps) {
            0 => Err(ParamError::new(
                Param::Strength,
                format!(
                    "{} of {steps} steps runs no step; raise strength or steps",
                    self.strength
                ),
            )),
            run => Ok(run),
        }
    }

    /// Index of the first scheduler step that runs, as diffusers' `get_timesteps`:
    /// `steps - min(floor(steps · strength), steps)`.
    pub fn first_step(&self, steps: usize) -> usize {
        steps - steps_at_strength(steps, self.strength)
    }

    /// The strength diffusers uses when none is given: 1 for inpainting, 0.8 otherwise.
    pub fn default_strength(inpainting: bool) -> f64 {
        if inpainting {
            DEFAULT_INPAINT_STRENGTH
        } else {
            DEFAULT_IMG2IMG_STRENGTH
        }
    }
}

/// How many of `steps` run from a picture at `strength`:
/// `min(floor(steps · strength), steps)`, as diffusers' `get_timesteps`.
pub fn steps_at_strength(steps: usize, strength: f64) -> usize {
    ((steps as f64 * strength) as usize).min(steps)
}

/// A fresh seed for a generation that gave none. Seeds stay below 2^32, as
/// in AUTOMATIC1111, so JavaScript clients can read them back exactly.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish() & 0xffff_ffff
}
