//! `--vae`: a VAE that replaces the model's own, from a diffusers VAE folder
//! or repository (`config.json` and `diffusion_pytorch_model.safetensors`),
//! a diffusers pipeline folder (its `vae/`), or a single `.safetensors` file
//! with LDM keys (with or without `first_stage_model.`, as AUTOMATIC1111's VAE
//! files ship) or diffusers keys. A single file brings no config: the model's
//! VAE config is used, as AUTOMATIC1111 does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::files::{
    component_weight_candidates, existing, ConfigText, WeightVariant, COMPONENT_CONFIG,
};
use super::hub::resolve_component;
use super::safetensors::SafetensorsReader;
use super::single_file::renamed::{RenamedTensors, StoredAs};
use super::single_file::{refuse_pickle, vae_module_path};
use super::source::ComponentWeights;
use crate::error::{Error, Result};
use crate::vae::VaeConfig;

/// A replacement VAE.
pub struct VaeOverride {
    /// The reference as given, for logs and `/v1/info`.
    spec: String,
    /// Its own config (a folder's), or none (a single file: the model's).
    config: Option<ConfigText>,
    /// The weight file.
    weights: PathBuf,
    /// Whether the file uses LDM names, under which prefix (`""` for none).
    ldm_prefix: Option<&'static str>,
}

impl VaeOverride {
    /// Opens a VAE reference: a `.safetensors` file, a folder or a repo id.
    pub fn open(spec: &str, variant: WeightVariant) -> Result<Self> {
        let path = Path::new(spec);
        refuse_pickle(path)?;
        if path.is_file() {
            let reader = SafetensorsReader::open(&[path.to_path_buf()])?;
            let has = |prefix: &str| reader.names().any(|n| n.starts_with(prefix));
            let ldm_prefix = if has("first_stage_model.") {
                Some("first_stage_model.")
            } else if has("decoder.up.") || has("encoder.down.") {
                Some("")
            } else if has("decoder.up_blocks.") {
                None
            } else {
                return Err(Error::invalid_file(
                    path,
                    "holds no VAE decoder (decoder.up.* or decoder.up_blocks.*)",
                ));
            };
            return Ok(Self {
                spec: spec.to_string(),
                config: None,
                weights: path.to_path_buf(),
                ldm_prefix,
            });
        }
        let root = resolve_component(spec, variant)?;
        let folder = if root.join("vae").join(COMPONENT_CONFIG).is_file() {
            root.join("vae")
        } else {
            root
        };
        let config = ConfigText::read(&existing(&folder, COMPONENT_CONFIG)?)?;
        let candidates = component_weight_candidates(variant);
        let weights = candidates
            .iter()
            .map(|name| folder.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| Error::MissingFile(folder.join(candidates[0])))?;
        Ok(Self {
            spec: spec.to_string(),
            config: Some(config),
            weights,
            ldm_prefix: None,
        })
    }

    /// The reference as given.
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// Its config, or `model_config` (the model's VAE config) when it has none.
    pub fn config(&self, model_config: impl FnOnce() -> Result<ConfigText>) -> Result<ConfigText> {
        match &self.config {
            Some(config) => Ok(config.clone()),
            None => model_config(),
        }
    }

    /// Its weights under diffusers names, for a VAE built from `config`.
    pub fn weights(
        &self,
        config: &ConfigText,
        dtype: DType,
        device: &Device,
    ) -> Result<ComponentWeights> {
        let reader = SafetensorsReader::open(std::slice::from_ref(&self.weights))?;
        let vb = match self.ldm_prefix {
            None => VarBuilder::from_backend(Box::new(reader), dtype, device.clone()),
            Some(prefix) => {
                let levels = VaeConfig::from_config(config)?.block_out_channels.len();
                let names: HashMap<String, StoredAs> = reader
                    .names()
                    .filter(|n| n.starts_with(prefix))
                    .filter_map(|n| {
                        Some((
                            vae_module_path(&n[prefix.len()..], levels)?,
                            StoredAs::same(n),
                        ))
                    })
                    .collect();
                let hint = format!("{prefix}encoder.*/{prefix}decoder.*");
                let backend =
                    RenamedTensors::new(Arc::new(reader), names, hint, self.weights.clone());
                VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
            }
        };
        Ok(ComponentWeights::new(vb, self.weights.clone()))
    }
}
