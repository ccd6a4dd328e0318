//! Building the UNet and the VAE from a [`ModelSource`], in the dtype
//! [`LoadOptions`] keeps each in: the pipeline and the benchmark load them
//! the same way.

use std::path::Path;

use candle_core::{DType, Device};

use super::files::{
    component_weight_candidates, existing, weights_error, Component, ComponentFiles, ConfigText,
    WeightVariant, COMPONENT_CONFIG,
};
use super::options::LoadOptions;
use super::source::ModelSource;
use crate::error::Error;
use crate::error::Result;
use crate::lora::fuse::{build_fused, Deltas};
use crate::lora::ModuleIndex;
use crate::unet::{UNet2DConditionModel, UNetConfig};
use crate::vae::{AutoencoderKL, AutoencoderTiny, TinyVaeConfig, VaeConfig};

/// The UNet of `source`, built from `config` (its parsed `unet/config.json`,
/// which callers may check before any weight is read).
pub fn load_unet(
    source: &dyn ModelSource,
    config: &UNetConfig,
    options: LoadOptions,
    device: &Device,
) -> Result<UNet2DConditionModel> {
    Ok(load_unet_fused(source, config, options, device, &Deltas::default())?.0)
}

/// [`load_unet`] with LoRA updates fused into its weights, and the index of
/// its modules.
pub(crate) fn load_unet_fused(
    source: &dyn ModelSource,
    config: &UNetConfig,
    options: LoadOptions,
    device: &Device,
    deltas: &Deltas,
) -> Result<(UNet2DConditionModel, ModuleIndex)> {
    let weights = source.weights(Component::Unet, options.dtype_for(Component::Unet), device)?;
    let (unet, modules) = build_fused(weights, deltas, |vb| {
        UNet2DConditionModel::new(vb, config).map(|m| m.with_compute_dtype(options.compute_dtype))
    })?;
    // LDM/SGM block names need one resnet count for every block.
    let layers = config
        .layers_per_block
        .expand(config.block_out_channels.len(), "layers_per_block")
        .ok()
        .filter(|layers| layers.windows(2).all(|w| w[0] == w[1]))
        .and_then(|layers| layers.first().copied());
    let modules = match layers {
        Some(layers) => modules.with_sgm_names(layers),
        None => modules,
    };
    Ok((unet, modules))
}

/// The VAE of `source`, from its config and weights, read in the dtype it
/// computes in ([`LoadOptions::vae_dtype`]: computing in f16, an SDXL model,
/// one with a second text encoder, upcasts it to f32 when its VAE config says
/// `force_upcast`).
pub fn load_vae(
    source: &dyn ModelSource,
    options: LoadOptions,
    device: &Device,
) -> Result<AutoencoderKL> {
    let config = VaeConfig::from_config(&source.config(Component::Vae)?)?;
    let sdxl = source.has(Component::TextEncoder2);
    let dtype = options.vae_dtype(config.force_upcast, sdxl);
    source
        .weights(Component::Vae, dtype, device)?
        .build(|vb| AutoencoderKL::new(vb, &config))
}

/// A tiny autoencoder (`AutoencoderTiny`, e.g. TAESD) from its own folder:
/// `config.json` and `diffusion_pytorch_model(.fp16).safetensors`, read in f32.
/// Errors name the file, and for weights the tensor.
pub fn load_tiny_vae(
    folder: &Path,
    variant: WeightVariant,
    device: &Device,
) -> Result<AutoencoderTiny> {
    let config = ConfigText::read(&existing(folder, COMPONENT_CONFIG)?)?;
    let class: serde_json::Value = config.parse()?;
    match class.get("_class_name").and_then(serde_json::Value::as_str) {
        Some("AutoencoderTiny") | None => {}
        Some(other) => {
            return Err(Error::invalid_file(
                &config.origin,
                format!("_class_name is {other:?}; a tiny autoencoder is an AutoencoderTiny"),
            ))
        }
    }
    let tiny_config = TinyVaeConfig::from_config(&config)?;
    let candidates = component_weight_candidates(variant);
    let weights = candidates
        .iter()
        .map(|name| folder.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| Error::MissingFile(folder.join(candidates[0])))?;
    let files = ComponentFiles {
        config: config.origin.clone(),
        weights: vec![weights.clone()],
    };
    let vb = files.var_builder(DType::F32, device)?;
    AutoencoderTiny::new(vb, &tiny_config).map_err(|e| match e {
        Error::InvalidFile { message, .. } => Error::invalid_file(&config.origin, message),
        other => weights_error(&weights, other),
    })
}
