//! The pipeline: prompt → embeddings → denoising loop → VAE → image.
//!
//! One loop serves text-to-image, image-to-image and inpainting. It follows
//! diffusers' `StableDiffusionPipeline`, `StableDiffusionImg2ImgPipeline` and
//! `StableDiffusionInpaintPipeline` (and their SDXL versions) step for step:
//! same preprocessing, same order of generator draws, same start step, same
//! guidance arithmetic and VAE scaling, so a seed gives the image diffusers gives.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use sd_contract::SchedulerKind;

use crate::clip::{ClipActivation, ClipTextConfig};
use crate::error::{Error, Result};
use crate::image::{
    encode_png, prepare_image, prepare_mask, to_rgb8, DecodedImage, GenerationSettings,
};
use crate::model_files::{read_json, Component, ComponentFiles, ModelIndex, WeightVariant};
use crate::preview::LatentFormat;
use crate::prompt::{PromptEmbeds, TextEncoders};
use crate::rng::TorchRng;
use crate::schedulers::{build_scheduler, kind_of, Scheduler, SchedulerConfig};
use crate::unet::{AddedCond, UNet2DConditionModel, UNetConfig};
use crate::vae::{AutoencoderKL, VaeConfig};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    /// What to draw.
    pub prompt: String,
    /// What to steer away from; `None` behaves like diffusers' default (an empty prompt).
    pub negative_prompt: Option<String>,
    /// Denoising steps asked for (PNDM runs one UNet pass more).
    pub steps: usize,
    /// Classifier-free guidance scale; at 1 or below only the conditional pass runs.
    pub guidance_scale: f64,
    /// Image width in pixels, a multiple of 8.
    pub width: usize,
    /// Image height in pixels, a multiple of 8.
    pub height: usize,
    /// Seed of torch's CPU generator that draws every noise tensor.
    pub seed: u64,
    /// Scheduler to use; `None` uses the model folder's own.
    pub scheduler: Option<SchedulerKind>,
    /// Initial latents `[1, C, H/8, W/8]` replacing the seeded noise (diffusers' `latents=`).
    pub init_latents: Option<Tensor>,
    /// A picture to start from (image-to-image), with a mask for inpainting;
    /// `None` generates from the prompt alone.
    pub image: Option<ImageInput>,
}

/// Strength diffusers' image-to-image pipeline uses by default.
pub const DEFAULT_IMG2IMG_STRENGTH: f64 = 0.8;
/// Strength diffusers' SD inpainting pipeline uses by default (start from pure noise).
pub const DEFAULT_INPAINT_STRENGTH: f64 = 1.0;

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

impl ImageInput {
    /// Checks what needs no model: strength within 0..=1 and a mask of the
    /// picture's size. Errors name the field (`strength`, `mask_image`).
    pub fn validate(&self) -> Result<()> {
        let strength = self.strength;
        if !(0.0..=1.0).contains(&strength) {
            return Err(Error::invalid_request(
                "strength",
                format!("must be between 0 and 1, got {strength}"),
            ));
        }
        let size = (self.image.width(), self.image.height());
        match &self.mask {
            Some(mask) if (mask.width(), mask.height()) != size => Err(Error::invalid_request(
                "mask_image",
                format!(
                    "is {}x{} but init_image is {}x{}; they must be the same size",
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
    /// rounded down to multiples of `multiple` (the VAE scale factor, 8).
    pub fn default_size(&self, multiple: usize) -> Result<(usize, usize)> {
        match self.image.size_rounded_down(multiple) {
            (0, _) | (_, 0) => Err(Error::invalid_request(
                "init_image",
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
    /// before PNDM's extra pass); none is an error naming `strength`.
    pub fn steps_run(&self, steps: usize) -> Result<usize> {
        match steps - self.first_step(steps) {
            0 => Err(Error::invalid_request(
                "strength",
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
        let run = ((steps as f64 * self.strength) as usize).min(steps);
        steps - run
    }
}

/// Progress after one denoising step.
#[derive(Debug, Clone, Copy)]
pub struct StepProgress<'a> {
    /// Steps done so far, from 1.
    pub step: usize,
    /// Steps this generation runs in all.
    pub total: usize,
    /// The latents after this step `[1, C, H/8, W/8]`, still noisy.
    pub latents: &'a Tensor,
    /// The scheduler's prediction of the clean latents at this step, when it
    /// makes one (every scheduler but PNDM).
    pub predicted_original: Option<&'a Tensor>,
}

impl StepProgress<'_> {
    /// What a live preview should show: the clean prediction, else the latents.
    pub fn preview_latents(&self) -> &Tensor {
        self.predicted_original.unwrap_or(self.latents)
    }
}

/// Where the time of one generation went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Tokenising and encoding the prompts.
    pub text_encoding: Duration,
    /// The denoising loop.
    pub denoising: Duration,
    /// VAE decoding and PNG encoding.
    pub decoding: Duration,
}

/// Intermediate tensors of one generation, for parity checks (`--trace`).
#[derive(Debug, Clone)]
pub struct Trace {
    /// Conditional text embeddings `[1, 77, D]`.
    pub prompt_embeds: Tensor,
    /// SDXL's pooled conditional embedding `[1, P]`.
    pub pooled_prompt_embeds: Option<Tensor>,
    /// Unconditional embeddings `[1, 77, D]`, when guidance needed them.
    pub negative_prompt_embeds: Option<Tensor>,
    /// SDXL's pooled unconditional embedding, when guidance needed it.
    pub negative_pooled_prompt_embeds: Option<Tensor>,
    /// SDXL's size conditioning `[1, 6]`.
    pub add_time_ids: Option<Tensor>,
    /// The UNet timesteps the loop ran, in order.
    pub timesteps: Vec<f64>,
    /// Latents entering the first step.
    pub latents_start: Tensor,
    /// Image-to-image and inpainting intermediates.
    pub image_input: Option<ImageTrace>,
    /// Latents after the last scheduler step, before VAE scaling.
    pub latents_final: Tensor,
    /// The decoded image `[1, 3, H, W]` in 0..1.
    pub image: Tensor,
}

/// Intermediates of image-to-image and inpainting, named as in the fixtures.
#[derive(Debug, Clone)]
pub struct ImageTrace {
    /// The prepared picture `[1, 3, H, W]` in -1..1.
    pub image_in: Tensor,
    /// The encoded picture times the VAE scaling factor, when it was encoded.
    pub image_latents: Option<Tensor>,
    /// The seeded noise `[1, C, H/8, W/8]`.
    pub noise: Tensor,
    /// The binarised mask `[1, 1, H, W]` (1 = repaint).
    pub mask_image: Option<Tensor>,
    /// The latent-resolution mask `[1, 1, H/8, W/8]`.
    pub mask: Option<Tensor>,
    /// The encoded masked picture times the VAE scaling factor.
    pub masked_image_latents: Option<Tensor>,
}

/// A finished image.
#[derive(Debug, Clone)]
pub struct GeneratedImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Interleaved 8-bit RGB, row by row.
    pub rgb: Vec<u8>,
    /// The PNG file, with the AUTOMATIC1111 `parameters` chunk.
    pub png: Vec<u8>,
    /// The seed used.
    pub seed: u64,
    /// The scheduler used.
    pub scheduler: SchedulerKind,
    /// Time spent per stage.
    pub timings: Timings,
    /// Intermediate tensors.
    pub trace: Trace,
}

/// Which Stable Diffusion generation a model folder holds, read from its configs
/// (never from its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFamily {
    /// SD 1.x: one OpenAI CLIP encoder.
    Sd1,
    /// SD 2.x (and SD-Turbo): one OpenCLIP encoder, often v-prediction.
    Sd2,
    /// SDXL (and SDXL-Turbo): two encoders and size/crop conditioning.
    Sdxl,
}

impl ModelFamily {
    /// The latent space of the family's VAE, for live previews.
    pub fn latent_format(self) -> LatentFormat {
        match self {
            ModelFamily::Sd1 | ModelFamily::Sd2 => LatentFormat::Sd15,
            ModelFamily::Sdxl => LatentFormat::Sdxl,
        }
    }

    /// The short name the worker reports (`sd1`, `sd2`, `sdxl`).
    pub fn as_str(self) -> &'static str {
        match self {
            ModelFamily::Sd1 => "sd1",
            ModelFamily::Sd2 => "sd2",
            ModelFamily::Sdxl => "sdxl",
        }
    }
}

/// How [`StableDiffusion::load_with`] reads a model's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Which stored weight files to read.
    pub variant: WeightVariant,
    /// The dtype the UNet's and the text encoders' convolution and projection
    /// matrices are kept in: f32, or bf16/f16 for half the memory. Every
    /// computation stays f32 (16-bit weights are widened per layer call); the
    /// VAE, norms, embeddings and biases are always f32.
    pub weight_dtype: DType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            variant: WeightVariant::Full,
            weight_dtype: DType::F32,
        }
    }
}

impl LoadOptions {
    /// The dtype `component`'s weights are read in: `weight_dtype` for the UNet
    /// and the text encoders, f32 for the VAE (small, and its decoder is the most
    /// precision-sensitive part).
    pub fn dtype_for(&self, component: Component) -> DType {
        match component {
            Component::Unet | Component::TextEncoder | Component::TextEncoder2 => self.weight_dtype,
            Component::Vae => DType::F32,
        }
    }

    /// Rejects a weight dtype other than f32, bf16 or f16.
    pub fn validate(&self) -> Result<()> {
        match self.weight_dtype {
            DType::F32 | DType::BF16 | DType::F16 => Ok(()),
            other => Err(Error::invalid_request(
                "dtype",
                format!("weights can be stored in f32, bf16 or f16, not {other:?}"),
            )),
        }
    }
}

/// A loaded Stable Diffusion model, ready to generate.
pub struct StableDiffusion {
    device: Device,
    name: String,
    family: ModelFamily,
    text: TextEncoders,
    /// SDXL: an absent negative prompt gives zero embeddings instead of encoding "".
    force_zeros_for_empty_prompt: bool,
    unet: UNet2DConditionModel,
    unet_config: UNetConfig,
    vae: AutoencoderKL,
    vae_config: VaeConfig,
    scheduler_config: SchedulerConfig,
    default_scheduler: SchedulerKind,
}

impl StableDiffusion {
    /// Loads every component of a diffusers folder onto `device`, in f32.
    pub fn load(folder: &Path, device: &Device) -> Result<Self> {
        Self::load_with(folder, device, LoadOptions::default())
    }

    /// Like [`StableDiffusion::load`], choosing which stored weight files to read
    /// and the dtype the large matrices are kept in.
    pub fn load_with(folder: &Path, device: &Device, options: LoadOptions) -> Result<Self> {
        options.validate()?;
        let started = Instant::now();
        let index_path = folder.join(crate::model_files::MODEL_INDEX);
        let index: ModelIndex = read_json(&index_path)?;
        let variant = options.variant;

        let files = ComponentFiles::find(folder, Component::Unet, variant)?;
        let unet_config = UNetConfig::from_file(&files.config)?;
        let dual = index.has("text_encoder_2");
        if dual != unet_config.needs_added_cond() {
            return Err(Error::invalid_file(
                &index_path,
                "SDXL needs both text_encoder_2 and a UNet with addition_embed_type \"text_time\"; \
                 this folder has only one of them",
            ));
        }
        if !index.has("text_encoder") {
            return Err(Error::invalid_file(
                &index_path,
                "no text_encoder (refiner-style models are not supported)",
            ));
        }
        let vb = files.var_builder(options.dtype_for(Component::Unet), device)?;
        let unet =
            UNet2DConditionModel::new(vb, &unet_config).map_err(|e| files.weights_error(e))?;

        let text = TextEncoders::load(folder, dual, options, device)?;

        let files = ComponentFiles::find(folder, Component::Vae, variant)?;
        let vae_config = VaeConfig::from_file(&files.config)?;
        let vb = files.var_builder(options.dtype_for(Component::Vae), device)?;
        let vae = AutoencoderKL::new(vb, &vae_config).map_err(|e| files.weights_error(e))?;

        let scheduler_config =
            SchedulerConfig::from_file(&folder.join(crate::model_files::SCHEDULER_CONFIG))?;
        let default_scheduler = Self::check_scheduler(&scheduler_config)?;

        let text_config =
            ClipTextConfig::from_file(&folder.join(Component::TextEncoder.config_file()))?;
        let family = if dual {
            ModelFamily::Sdxl
        } else if text_config.hidden_act == ClipActivation::Gelu
            || scheduler_config.prediction_type == "v_prediction"
        {
            ModelFamily::Sd2
        } else {
            ModelFamily::Sd1
        };
        let force_zeros_for_empty_prompt = dual
            && index
                .components
                .get("force_zeros_for_empty_prompt")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(true);

        let name = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| folder.display().to_string());
        tracing::info!(model = %name, family = family.as_str(), weights = ?options.weight_dtype, elapsed = ?started.elapsed(), "model loaded");
        Ok(Self {
            device: device.clone(),
            name,
            family,
            text,
            force_zeros_for_empty_prompt,
            unet,
            unet_config,
            vae,
            vae_config,
            scheduler_config,
            default_scheduler,
        })
    }

    /// Builds a config's own scheduler once, so an unsupported one fails early,
    /// and returns which kind it is.
    fn check_scheduler(config: &SchedulerConfig) -> Result<SchedulerKind> {
        build_scheduler(None, config, 1)?;
        kind_of(config).ok_or_else(|| {
            Error::invalid_file(config.source_path(), "the scheduler class is not supported")
        })
    }

    /// Replaces the folder's scheduler config (the one `scheduler: None` uses and
    /// other schedulers are built from), e.g. to run a distilled model with its
    /// recommended spacing.
    pub fn set_scheduler_config(&mut self, config: SchedulerConfig) -> Result<()> {
        self.default_scheduler = Self::check_scheduler(&config)?;
        self.scheduler_config = config;
        Ok(())
    }

    /// Sets the model name written into PNG metadata (defaults to the folder name).
    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = name.into();
    }

    /// The model name written into PNG metadata.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The model's family, detected from its configs.
    pub fn family(&self) -> ModelFamily {
        self.family
    }

    /// Whether the UNet is an inpainting one (9 input channels: latents, mask, masked image).
    pub fn is_inpainting(&self) -> bool {
        self.unet_config.in_channels == 9
    }

    /// The scheduler the model folder configures.
    pub fn default_scheduler(&self) -> SchedulerKind {
        self.default_scheduler
    }

    /// The image size the model was trained at, `(width, height)` (diffusers' default).
    pub fn default_size(&self) -> (usize, usize) {
        let (height, width) = self
            .unet_config
            .sample_size
            .map_or((64, 64), |size| size.height_width());
        let factor = self.vae_scale_factor();
        (width * factor, height * factor)
    }

    /// How many pixels one latent cell covers (8 for every Stable Diffusion VAE).
    pub fn vae_scale_factor(&self) -> usize {
        1 << self.vae_config.block_out_channels.len().saturating_sub(1)
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Encodes one prompt, reusing recent results.
    pub fn encode_prompt(&mut self, text: &str) -> Result<PromptEmbeds> {
        self.text.encode(text)
    }

    /// Encodes the negative prompt as diffusers does: an absent one is the empty
    /// prompt, except for SDXL folders with `force_zeros_for_empty_prompt`, where
    /// it is zeros shaped like `prompt`.
    pub fn encode_negative(
        &mut self,
        negative: Option<&str>,
        prompt: &PromptEmbeds,
    ) -> Result<PromptEmbeds> {
        match negative {
            None if self.force_zeros_for_empty_prompt => prompt.zeros_like(),
            _ => self.text.encode(negative.unwrap_or("")),
        }
    }

    /// Checks a request against what this model can do, naming the faulty field.
    pub fn validate(&self, params: &GenerateParams) -> Result<()> {
        let factor = self.vae_scale_factor();
        for (field, value) in [("width", params.width), ("height", params.height)] {
            if value == 0 || value % factor != 0 {
                return Err(Error::invalid_request(
                    field,
                    format!("must be a positive multiple of {factor}, got {value}"),
                ));
            }
        }
        if params.steps == 0 {
            return Err(Error::invalid_request("steps", "must be at least 1"));
        }
        if !params.guidance_scale.is_finite() || params.guidance_scale < 0.0 {
            return Err(Error::invalid_request(
                "guidance_scale",
                format!(
                    "must be a finite number >= 0, got {}",
                    params.guidance_scale
                ),
            ));
        }
        if let Some(latents) = &params.init_latents {
            let expected = self.latent_shape(params);
            if latents.dims() != expected {
                return Err(Error::invalid_request(
                    "init_latents",
                    format!("expected shape {expected:?}, got {:?}", latents.dims()),
                ));
            }
        }
        match &params.image {
            Some(input) => self.validate_image_input(params, input),
            None if self.is_inpainting() => Err(Error::invalid_request(
                "mask_image",
                "this model has an inpainting UNet (9 input channels): it needs init_image and mask_image",
            )),
            None => Ok(()),
        }
    }

    fn validate_image_input(&self, params: &GenerateParams, input: &ImageInput) -> Result<()> {
        input.validate()?;
        input.steps_run(params.steps)?;
        if params.init_latents.is_some() {
            return Err(Error::invalid_request(
                "init_latents",
                "cannot be combined with an init image",
            ));
        }
        if input.mask.is_none() && self.is_inpainting() {
            return Err(Error::invalid_request(
                "mask_image",
                "this model has an inpainting UNet (9 input channels): it needs a mask",
            ));
        }
        Ok(())
    }

    fn latent_shape(&self, params: &GenerateParams) -> [usize; 4] {
        let factor = self.vae_scale_factor();
        [
            1,
            self.vae_config.latent_channels,
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

    /// Generates one image. `on_step` runs after every denoising step, with the
    /// latents for a live preview; returning `ControlFlow::Break` stops the
    /// loop with [`Error::Cancelled`].
    pub fn generate(
        &mut self,
        params: &GenerateParams,
        on_step: &mut dyn FnMut(StepProgress<'_>) -> ControlFlow<()>,
    ) -> Result<GeneratedImage> {
        self.validate(params)?;
        let mut timings = Timings::default();
        let guided = params.guidance_scale > 1.0;

        let started = Instant::now();
        let prompt = self.encode_prompt(&params.prompt)?;
        let negative = if guided {
            Some(self.encode_negative(params.negative_prompt.as_deref(), &prompt)?)
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
        timings.text_encoding = started.elapsed();

        let started = Instant::now();
        let kind = params.scheduler.unwrap_or(self.default_scheduler);
        let mut scheduler =
            build_scheduler(params.scheduler, &self.scheduler_config, params.steps)?;
        let mut rng = TorchRng::new(params.seed);
        let start = self.prepare_start(params, scheduler.as_ref(), &mut rng)?;
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
            let prediction =
                self.unet
                    .forward_with_cond(&input, timestep, &context, added.as_ref())?;
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
        timings.denoising = started.elapsed();

        let started = Instant::now();
        let image = self.decode_latents(&latents)?;
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
            denoising_strength: params.image.as_ref().map(|input| input.strength),
        };
        let png = encode_png(&rgb, params.width, params.height, Some(&settings))?;
        timings.decoding = started.elapsed();

        Ok(GeneratedImage {
            width: params.width,
            height: params.height,
            rgb,
            png,
            seed: params.seed,
            scheduler: kind,
            timings,
            trace: Trace {
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
            },
        })
    }

    /// The latents the loop starts from and what the loop needs besides them.
    ///
    /// Text-to-image: seeded noise times `init_noise_sigma`. Otherwise the
    /// generator draws, in diffusers' order: the picture's posterior sample
    /// (skipped by a 9-channel UNet at strength 1), the noise, then for
    /// inpainting the masked picture's posterior sample (drawn for 4-channel
    /// UNets too, which never use it).
    fn prepare_start(
        &self,
        params: &GenerateParams,
        scheduler: &dyn Scheduler,
        rng: &mut TorchRng,
    ) -> Result<StartLatents> {
        let shape = self.latent_shape(params);
        let Some(input) = &params.image else {
            let noise = match &params.init_latents {
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
            Some(self.encode_sample(&image_in, rng)?)
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
            let masked_latents = self.encode_sample(&masked_image, rng)?;
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
        start.trace = Some(ImageTrace {
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
    fn encode_sample(&self, image: &Tensor, rng: &mut TorchRng) -> Result<Tensor> {
        let posterior = self.vae.encode(image)?;
        let eps = rng.randn_tensor(posterior.mean.dims(), &self.device)?;
        let mut z = posterior.sample_with_noise(&eps)?;
        if let Some(shift) = self.vae_config.shift_factor {
            z = (z - shift)?;
        }
        Ok((z * self.vae_config.scaling_factor)?)
    }

    /// Decodes final latents into an image `[1, 3, H, W]` in 0..1, undoing the VAE's scaling.
    pub fn decode_latents(&self, latents: &Tensor) -> Result<Tensor> {
        let mut z = (latents / self.vae_config.scaling_factor)?;
        if let Some(shift) = self.vae_config.shift_factor {
            z = (z + shift)?;
        }
        let decoded = self.vae.decode(&z)?;
        Ok(((decoded / 2.0)? + 0.5)?.clamp(0f32, 1f32)?)
    }
}

/// Where the denoising loop starts and what it carries besides the latents.
struct StartLatents {
    latents: Tensor,
    /// Index into the scheduler's timesteps of the first step that runs.
    first_step: usize,
    /// 9-channel UNets: the latent mask and masked-image latents `[1, 1 + C, h, w]`,
    /// concatenated to the scaled latents at every step.
    inpaint_channels: Option<Tensor>,
    /// 4-channel inpainting: the region kept from the picture.
    known_region: Option<KnownRegion>,
    trace: Option<ImageTrace>,
}

/// The unmasked region of 4-channel inpainting, re-imposed after every step.
struct KnownRegion {
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
    fn reimpose(
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

/// A fresh seed for a request that gave none (32 bits, as most tools print them).
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
