//! The text-to-image pipeline: prompt → embeddings → denoising loop → VAE → image.
//!
//! It follows diffusers' `StableDiffusionPipeline` step for step (same noise
//! order, same guidance arithmetic, same VAE scaling) so a seed gives the image
//! diffusers gives.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use sd_contract::SchedulerKind;

use crate::clip::{ClipActivation, ClipTextConfig};
use crate::error::{Error, Result};
use crate::image::{encode_png, to_rgb8, GenerationSettings};
use crate::model_files::{read_json, Component, ComponentFiles, ModelIndex, WeightVariant};
use crate::prompt::{PromptEmbeds, TextEncoders};
use crate::rng::TorchRng;
use crate::schedulers::{build_scheduler, kind_of, SchedulerConfig};
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
}

/// Progress after one denoising step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepProgress {
    /// Steps done so far, from 1.
    pub step: usize,
    /// Steps this generation runs in all.
    pub total: usize,
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
    /// Latents after the last scheduler step, before VAE scaling.
    pub latents_final: Tensor,
    /// The decoded image `[1, 3, H, W]` in 0..1.
    pub image: Tensor,
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
    /// The short name the worker reports (`sd1`, `sd2`, `sdxl`).
    pub fn as_str(self) -> &'static str {
        match self {
            ModelFamily::Sd1 => "sd1",
            ModelFamily::Sd2 => "sd2",
            ModelFamily::Sdxl => "sdxl",
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
    /// Loads every component of a diffusers folder onto `device`, computing in f32.
    pub fn load(folder: &Path, device: &Device) -> Result<Self> {
        Self::load_with(folder, device, WeightVariant::Full)
    }

    /// Like [`StableDiffusion::load`], choosing which stored weight precision to read.
    pub fn load_with(folder: &Path, device: &Device, variant: WeightVariant) -> Result<Self> {
        let started = Instant::now();
        let index_path = folder.join(crate::model_files::MODEL_INDEX);
        let index: ModelIndex = read_json(&index_path)?;
        let dtype = DType::F32;

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
        let unet = UNet2DConditionModel::new(files.var_builder(dtype, device)?, &unet_config)
            .map_err(|e| files.weights_error(e))?;

        let text = TextEncoders::load(folder, dual, variant, device)?;

        let files = ComponentFiles::find(folder, Component::Vae, variant)?;
        let vae_config = VaeConfig::from_file(&files.config)?;
        let vae = AutoencoderKL::new(files.var_builder(dtype, device)?, &vae_config)
            .map_err(|e| files.weights_error(e))?;

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
        tracing::info!(model = %name, family = family.as_str(), elapsed = ?started.elapsed(), "model loaded");
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

    /// Generates one image. `on_step` runs after every denoising step; returning
    /// `ControlFlow::Break` stops the loop with [`Error::Cancelled`].
    pub fn generate(
        &mut self,
        params: &GenerateParams,
        on_step: &mut dyn FnMut(StepProgress) -> ControlFlow<()>,
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
        let noise = match &params.init_latents {
            Some(latents) => latents.to_device(&self.device)?.to_dtype(DType::F32)?,
            None => rng.randn_tensor(&self.latent_shape(params), &self.device)?,
        };
        let mut latents = (noise * scheduler.init_noise_sigma())?;
        let timesteps = scheduler.timesteps().to_vec();
        let total = timesteps.len();
        for (index, &timestep) in timesteps.iter().enumerate() {
            let input = batch(&latents, guided.then_some(&latents))?;
            let input = scheduler.scale_model_input(&input, index)?;
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
            if on_step(StepProgress {
                step: index + 1,
                total,
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
                latents_final: latents,
                image,
            },
        })
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
