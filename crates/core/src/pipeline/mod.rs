//! The pipeline: prompt → embeddings → denoising loop → VAE → image.
//!
//! One loop ([`denoise`]) serves text-to-image, image-to-image and inpainting,
//! for one image or several sharing each UNet pass ([`batch`]).
//! It follows diffusers' `StableDiffusionPipeline`, `StableDiffusionImg2ImgPipeline`
//! and `StableDiffusionInpaintPipeline` (and their SDXL versions) step for step:
//! same preprocessing, same order of generator draws, same start step ([`start`]),
//! same guidance arithmetic and VAE scaling, so a seed gives the image diffusers
//! gives. [`params`] holds what a generation is asked to do and its checks,
//! [`defaults`] what it takes for what it leaves out, [`output`] what it returns.

mod batch;
mod defaults;
mod denoise;
mod loras;
mod output;
mod params;
mod start;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};

pub use batch::{BatchBudget, BatchPlan};
pub use defaults::Defaults;
pub use output::{GeneratedImage, ImageTrace, StageTimings, StepProgress, Trace};
pub use params::{
    random_seed, steps_at_strength, DebugOptions, GenerateParams, ImageInput, VaeDecoder,
    DEFAULT_IMG2IMG_STRENGTH, DEFAULT_INPAINT_STRENGTH,
};

use crate::clip::ClipTextConfig;
use crate::embeddings::{EmbeddingSet, SkippedEmbedding};
use crate::error::{Error, Result};
use crate::interrupt::Interrupt;
use crate::model::components::load_unet_fused;
use crate::model::{
    load_vae, model_hash, model_name, open_model, Component, DiffusersFolder, LoadOptions,
    ModelFamily, ModelProfile, ModelRequest, Precision, SharedSource,
};
use crate::prompt::{PromptEmbeds, PromptEncoding, TextEncoders};
use crate::schedulers::{build_scheduler, kind_of, SchedulerConfig, SchedulerKind, StepLimits};
use crate::unet::{UNet2DConditionModel, UNetConfig};
use crate::vae::{AutoencoderKL, AutoencoderTiny, TilingMode, VaeTiling};

/// A loaded Stable Diffusion model, ready to generate.
pub struct StableDiffusion {
    device: Device,
    name: String,
    model_hash: Option<String>,
    family: ModelFamily,
    text: TextEncoders,
    /// SDXL: an absent negative prompt gives zero embeddings instead of encoding "".
    force_zeros_for_empty_prompt: bool,
    /// `None` only after a LoRA change failed to rebuild it; the next change rebuilds it.
    unet: Option<UNet2DConditionModel>,
    unet_config: UNetConfig,
    vae: AutoencoderKL,
    /// Where the weights come from: LoRA changes rebuild components from it.
    source: SharedSource,
    options: LoadOptions,
    loras: loras::AppliedLoras,
    /// The tiny autoencoder for fast decodes and live previews, when one is loaded.
    tiny_vae: Option<Arc<AutoencoderTiny>>,
    /// When the full VAE runs in tiles, and their geometry.
    vae_tiling: TilingMode,
    tile_geometry: VaeTiling,
    scheduler_config: SchedulerConfig,
    default_scheduler: SchedulerKind,
}

impl StableDiffusion {
    /// Loads every component of a diffusers folder onto `device`, in f32.
    pub fn load(folder: &Path, device: &Device) -> Result<Self> {
        Self::load_with(folder, device, LoadOptions::default())
    }

    /// Like [`StableDiffusion::load`], choosing which stored weight files to read
    /// and the dtype the large matrices are kept in. The UNet weights' hash
    /// ([`model_hash`]) is worked out once, after loading, for PNG metadata.
    pub fn load_with(folder: &Path, device: &Device, options: LoadOptions) -> Result<Self> {
        let source = DiffusersFolder::open(folder, options.variant)?;
        let mut model = Self::load_from(Arc::new(source), device, options)?;
        let started = Instant::now();
        let hash = model_hash(folder, options.variant)?;
        tracing::debug!(hash, elapsed = ?started.elapsed(), "model weights hashed");
        model.model_hash = Some(hash);
        Ok(model)
    }

    /// Opens and loads the model `request` names (a diffusers folder, a repo
    /// id or a single-file checkpoint, with its `--vae` and prediction-type
    /// overrides), names it as [`model_name`] does and hashes its weights for
    /// PNG metadata.
    pub fn load_request(
        request: &ModelRequest,
        device: &Device,
        options: LoadOptions,
    ) -> Result<Self> {
        let opened = open_model(request)?;
        let mut model = Self::load_from(Arc::clone(&opened.source), device, options)?;
        let started = Instant::now();
        let hash = opened.hash()?;
        tracing::debug!(hash, elapsed = ?started.elapsed(), "model weights hashed");
        model.model_hash = Some(hash);
        model.set_name(model_name(&request.model));
        Ok(model)
    }

    /// Loads every component from `source` onto `device` (`options.variant`
    /// is the source's business; `options.weight_dtype` applies here). The
    /// model keeps `source` to rebuild the components LoRA adapters change.
    pub fn load_from(source: SharedSource, device: &Device, options: LoadOptions) -> Result<Self> {
        options.validate()?;
        let loaded = Arc::clone(&source);
        let source = &*loaded;
        let started = Instant::now();
        let unet_config = UNetConfig::from_config(&source.config(Component::Unet)?)?;
        let dual = source.has(Component::TextEncoder2);
        if dual != unet_config.needs_added_cond() {
            return Err(Error::invalid_file(
                source.index_origin(),
                "SDXL needs both text_encoder_2 and a UNet with addition_embed_type \"text_time\"; \
                 this model has only one of them",
            ));
        }
        if !source.has(Component::TextEncoder) {
            return Err(Error::invalid_file(
                source.index_origin(),
                "no text_encoder (refiner-style models are not supported)",
            ));
        }
        let (unet, unet_modules) =
            load_unet_fused(source, &unet_config, options, device, &Default::default())?;
        let text = TextEncoders::load(source, dual, options, device)?;
        let vae = load_vae(source, options, device)?;
        let tile_geometry = VaeTiling::for_config(vae.config());

        let scheduler_config = SchedulerConfig::from_config(&source.scheduler_config()?)?;
        let default_scheduler = Self::check_scheduler(&scheduler_config)?;

        let text_config = ClipTextConfig::from_config(&source.config(Component::TextEncoder)?)?;
        let family = ModelFamily::detect(dual, &text_config, &scheduler_config);
        let name = source.name();
        tracing::info!(
            model = %name,
            family = family.as_str(),
            weights = ?options.weight_dtype,
            compute = ?options.compute_dtype,
            vae = ?vae.dtype(),
            attention = crate::layers::attention::kernel_name(device, options.compute_dtype),
            elapsed = ?started.elapsed(),
            "model loaded"
        );
        Ok(Self {
            device: device.clone(),
            name,
            model_hash: None,
            family,
            text,
            force_zeros_for_empty_prompt: dual && source.force_zeros_for_empty_prompt(),
            unet: Some(unet),
            unet_config,
            vae,
            source: loaded,
            options,
            loras: loras::AppliedLoras::new(unet_modules),
            tiny_vae: None,
            vae_tiling: TilingMode::Off,
            tile_geometry,
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

    /// Replaces the model's scheduler config (the one `scheduler: None` uses and
    /// other schedulers are built from), e.g. to run a distilled model with its
    /// recommended spacing.
    pub fn set_scheduler_config(&mut self, config: SchedulerConfig) -> Result<()> {
        self.default_scheduler = Self::check_scheduler(&config)?;
        self.scheduler_config = config;
        Ok(())
    }

    /// Loads (or with `None` drops) the tiny autoencoder used for
    /// [`VaeDecoder::Tiny`] decodes and for live previews. Its latent space
    /// must be the model's: the same channels and scale factor.
    pub fn set_tiny_vae(&mut self, tiny: Option<AutoencoderTiny>) -> Result<()> {
        if let Some(tiny) = &tiny {
            let config = tiny.config();
            let expected = (self.vae.config().latent_channels, self.vae_scale_factor());
            let found = (config.latent_channels, config.scale_factor());
            if found != expected {
                return Err(Error::invalid_file(
                    "config.json",
                    format!(
                        "the tiny autoencoder has {} latent channels at 1/{} scale, the model {} at 1/{}",
                        found.0, found.1, expected.0, expected.1
                    ),
                ));
            }
        }
        self.tiny_vae = tiny.map(Arc::new);
        Ok(())
    }

    /// The tiny autoencoder, when one is loaded (shared, so a step callback
    /// can decode previews while the pipeline runs).
    pub fn tiny_vae(&self) -> Option<Arc<AutoencoderTiny>> {
        self.tiny_vae.clone()
    }

    /// Sets when the full VAE encodes and decodes in tiles (default: never).
    pub fn set_vae_tiling(&mut self, mode: TilingMode) {
        self.vae_tiling = mode;
    }

    /// When the full VAE encodes and decodes in tiles.
    pub fn vae_tiling(&self) -> TilingMode {
        self.vae_tiling
    }

    /// Replaces the tile geometry (diffusers' from the VAE config by default),
    /// e.g. smaller tiles to see tiling at work on a small image.
    pub fn set_tile_geometry(&mut self, tiling: VaeTiling) {
        self.tile_geometry = tiling;
    }

    /// Whether a VAE pass over an image of `height`×`width` runs in tiles.
    pub(crate) fn tiles(&self, height: usize, width: usize) -> bool {
        self.vae_tiling.tiles(self.vae.config(), height, width)
    }

    /// Sets the model name written into PNG metadata (defaults to the source's
    /// name; [`crate::model::model_name`] gives it for a model reference).
    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = name.into();
    }

    /// The model name written into PNG metadata.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The short hash of the weights written into PNG metadata, when the model
    /// was loaded from a folder ([`StableDiffusion::load_with`]).
    pub fn model_hash(&self) -> Option<&str> {
        self.model_hash.as_deref()
    }

    /// The model's family, detected from its configs.
    pub fn family(&self) -> ModelFamily {
        self.family
    }

    /// What the model is and accepts, for request checks and defaults.
    pub fn profile(&self) -> ModelProfile {
        ModelProfile {
            family: self.family,
            inpainting: self.is_inpainting(),
            native_size: self.native_size(),
            vae_scale_factor: self.vae_scale_factor(),
            scheduler: self.default_scheduler,
            step_limits: StepLimits::of(&self.scheduler_config),
            max_clip_skip: self.text.max_clip_skip(),
            tiny_decoder: self.tiny_vae.is_some(),
            precision: self.precision(),
        }
    }

    /// Whether the UNet is an inpainting one (9 input channels: latents, mask, masked image).
    pub fn is_inpainting(&self) -> bool {
        self.unet_config.in_channels == 9
    }

    /// The image size the model was trained at, `(width, height)` (diffusers' default).
    fn native_size(&self) -> (usize, usize) {
        let (height, width) = self
            .unet_config
            .sample_size
            .map_or((64, 64), |size| size.height_width());
        let factor = self.vae_scale_factor();
        (width * factor, height * factor)
    }

    /// How many pixels one latent cell covers (8 for every Stable Diffusion VAE).
    pub fn vae_scale_factor(&self) -> usize {
        1 << self.vae.config().block_out_channels.len().saturating_sub(1)
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Makes the textual-inversion embeddings of `set` that fit this model
    /// callable by name in prompts (replacing those set before); returns
    /// the ones that do not fit, with the reason.
    pub fn set_embeddings(&mut self, set: &EmbeddingSet) -> Result<Vec<SkippedEmbedding>> {
        self.text.set_embeddings(set)
    }

    /// What is stored and computed in which dtype.
    pub fn precision(&self) -> Precision {
        Precision {
            weights: self.options.weight_dtype,
            unet: self.options.compute_dtype,
            text_encoders: self.options.compute_dtype,
            vae: self.vae.dtype(),
            attention: crate::layers::attention::kernel_name(
                &self.device,
                self.options.compute_dtype,
            ),
        }
    }

    /// Encodes one prompt as `encoding` says (a [`crate::prompt::PromptSyntax`] alone skips
    /// no layer), reusing recent results.
    pub fn encode_prompt(
        &mut self,
        text: &str,
        encoding: impl Into<PromptEncoding>,
    ) -> Result<PromptEmbeds> {
        self.text.encode(text, encoding)
    }

    /// Encodes the negative prompt (with the prompt's `encoding`) as diffusers does: an absent one is the empty
    /// prompt, except for SDXL folders with `force_zeros_for_empty_prompt`, where
    /// it is zeros shaped like `prompt`. The shorter of the two is then padded
    /// with the empty prompt's chunk to the other's length (only A1111-syntax
    /// prompts longer than one CLIP window differ in length); the prompt may
    /// grow, so it is returned too.
    pub fn encode_negative(
        &mut self,
        negative: Option<&str>,
        prompt: PromptEmbeds,
        encoding: impl Into<PromptEncoding>,
    ) -> Result<(PromptEmbeds, PromptEmbeds)> {
        self.encode_negative_until(negative, prompt, encoding.into(), Interrupt::NEVER)
    }

    /// [`StableDiffusion::encode_negative`], stopped by `interrupt`.
    pub(crate) fn encode_negative_until(
        &mut self,
        negative: Option<&str>,
        prompt: PromptEmbeds,
        encoding: PromptEncoding,
        interrupt: Interrupt<'_>,
    ) -> Result<(PromptEmbeds, PromptEmbeds)> {
        let negative = match negative {
            None if self.force_zeros_for_empty_prompt => return Ok((prompt.zeros_like()?, prompt)),
            _ => self
                .text
                .encode_interruptible(negative.unwrap_or(""), encoding, interrupt)?,
        };
        if negative.len() == prompt.len() {
            return Ok((negative, prompt));
        }
        let empty = self.text.encode_interruptible("", encoding, interrupt)?;
        let len = negative.len().max(prompt.len());
        Ok((
            negative.padded_to(len, &empty)?,
            prompt.padded_to(len, &empty)?,
        ))
    }

    /// Decodes final latents into an image `[1, 3, H, W]` in 0..1 with
    /// `decoder`, undoing the VAE's scaling. The full VAE runs in tiles when
    /// the tiling mode says so; stops with [`Error::Cancelled`] once
    /// `interrupt` is raised.
    pub fn decode_latents(
        &self,
        latents: &Tensor,
        decoder: VaeDecoder,
        interrupt: Interrupt<'_>,
    ) -> Result<Tensor> {
        if decoder == VaeDecoder::Tiny {
            let tiny = self.tiny_vae.as_ref().ok_or_else(|| {
                Error::param(
                    crate::Param::Decoder,
                    "asks for the tiny autoencoder, but this model has none loaded",
                )
            })?;
            return tiny.decode_to_unit(latents, interrupt);
        }
        // The UNet's layers are done: their Winograd buffer would only add
        // to the decoder's peak.
        crate::layers::conv::release_buffers();
        let config = self.vae.config();
        let mut z = (latents / config.scaling_factor)?;
        if let Some(shift) = config.shift_factor {
            z = (z + shift)?;
        }
        let (_, _, h, w) = z.dims4()?;
        let factor = self.vae_scale_factor();
        let decoded = if self.tiles(h * factor, w * factor) {
            self.vae.decode_tiled(&z, &self.tile_geometry, interrupt)?
        } else {
            self.vae.decode_interruptible(&z, interrupt)?
        };
        Ok(((decoded / 2.0)? + 0.5)?.clamp(0f32, 1f32)?)
    }
}
