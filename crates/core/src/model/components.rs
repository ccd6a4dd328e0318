//! Building the UNet and the VAE from a [`ModelSource`], in the dtype
//! [`LoadOptions`] keeps each in: the pipeline and the benchmark load them
//! the same way.

use candle_core::Device;

use super::files::Component;
use super::options::LoadOptions;
use super::source::ModelSource;
use crate::error::Result;
use crate::lora::fuse::{build_fused, Deltas};
use crate::lora::ModuleIndex;
use crate::unet::{UNet2DConditionModel, UNetConfig};
use crate::vae::{AutoencoderKL, VaeConfig};

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
    build_fused(weights, deltas, |vb| UNet2DConditionModel::new(vb, config))
}

/// The VAE of `source`, from its config and weights.
pub fn load_vae(
    source: &dyn ModelSource,
    options: LoadOptions,
    device: &Device,
) -> Result<AutoencoderKL> {
    let config = VaeConfig::from_config(&source.config(Component::Vae)?)?;
    source
        .weights(Component::Vae, options.dtype_for(Component::Vae), device)?
        .build(|vb| AutoencoderKL::new(vb, &config))
}
