//! What a figure runs, built from the figure's source: one component, the
//! text encoders, or the whole production pipeline.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use sd_core::model::{self, Component, LoadOptions, ModelSource, SharedSource, WeightVariant};
use sd_core::pipeline::StableDiffusion;
use sd_core::prompt::TextEncoders;
use sd_core::unet::{UNet2DConditionModel, UNetConfig};
use sd_core::vae::{AutoencoderKL, AutoencoderTiny, TilingMode, TinyVaeConfig};

use super::args::{BenchArgs, BenchComponent};
use super::random_weights::RandomBackend;
use crate::decoding::DecoderChoice;

/// The prompt of the `text` and `image` figures.
pub const PROMPT: &str = "a photograph of an astronaut riding a horse";

/// What a figure runs, built from its source.
pub enum Loaded {
    /// The UNet alone.
    Unet(Box<UNet2DConditionModel>),
    /// The VAE alone, with the tiling mode of `--vae-tiling`.
    Vae(Box<AutoencoderKL>, TilingMode),
    /// The tiny autoencoder alone.
    Tiny(Box<AutoencoderTiny>),
    /// The text encoders with their tokenizers, and the prompt's ids for `--dump`.
    Text(Box<TextEncoders>, Vec<(&'static str, Tensor)>),
    /// The whole pipeline.
    Image(Box<StableDiffusion>),
}

impl Loaded {
    /// Builds what `component`'s figures run, from `source`.
    pub fn load(
        shared: SharedSource,
        component: BenchComponent,
        args: &BenchArgs,
        options: LoadOptions,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let source = &*shared;
        Ok(match component {
            BenchComponent::Unet => Loaded::Unet(Box::new(load_unet(source, options, device)?)),
            BenchComponent::VaeDecode | BenchComponent::VaeEncode => {
                let vae = model::load_vae(source, options, device)?;
                Loaded::Vae(Box::new(vae), args.decoding.tiling_mode())
            }
            BenchComponent::TinyDecode => Loaded::Tiny(Box::new(load_tiny(args, device)?)),
            BenchComponent::Text => {
                let dual = source.has(Component::TextEncoder2);
                let encoders = TextEncoders::load(source, dual, options, device)?;
                Loaded::Text(Box::new(encoders), prompt_ids(source, device)?)
            }
            BenchComponent::Image => {
                let mut pipeline = StableDiffusion::load_from(shared.clone(), device, options)?;
                let decoding = &args.decoding;
                if decoding.tiny_vae.is_some() || decoding.vae_decoder == DecoderChoice::Tiny {
                    pipeline.set_tiny_vae(Some(load_tiny(args, device)?))?;
                }
                pipeline.set_vae_tiling(args.decoding.tiling_mode());
                Loaded::Image(Box::new(pipeline))
            }
        })
    }
}

/// The tiny autoencoder of `--tiny-vae`, else one in TAESD's shape (its
/// config's defaults) with random weights from `--seed`.
fn load_tiny(args: &BenchArgs, device: &Device) -> anyhow::Result<AutoencoderTiny> {
    if let Some(spec) = &args.decoding.tiny_vae {
        let folder = model::hub::resolve_component(spec, WeightVariant::Full)?;
        return Ok(model::load_tiny_vae(&folder, WeightVariant::Full, device)?);
    }
    let backend = RandomBackend::new(args.seed, Component::Vae, None);
    let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone());
    Ok(AutoencoderTiny::new(vb, &TinyVaeConfig::default())?)
}

/// The UNet, as the pipeline loads it.
pub fn load_unet(
    source: &dyn ModelSource,
    options: LoadOptions,
    device: &Device,
) -> anyhow::Result<UNet2DConditionModel> {
    let config = UNetConfig::from_config(&source.config(Component::Unet)?)?;
    Ok(model::load_unet(source, &config, options, device)?)
}

/// The ids of [`PROMPT`] from each tokenizer, `[1, 77]` i64, for `--dump`.
fn prompt_ids(
    source: &dyn ModelSource,
    device: &Device,
) -> anyhow::Result<Vec<(&'static str, Tensor)>> {
    let mut ids = Vec::new();
    for (key, encoder) in [
        ("input_ids", Component::TextEncoder),
        ("input_ids_2", Component::TextEncoder2),
    ] {
        if source.has(encoder) {
            let tokens: Vec<i64> = source
                .tokenizer(encoder)?
                .encode(PROMPT)
                .into_iter()
                .map(i64::from)
                .collect();
            let len = tokens.len();
            ids.push((key, Tensor::from_vec(tokens, (1, len), device)?));
        }
    }
    Ok(ids)
}
