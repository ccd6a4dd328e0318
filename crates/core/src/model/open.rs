//! From the model flags (`--model`, `--config`, `--vae`, `--prediction-type`)
//! to a [`ModelSource`] and the hash that names its weights: the one place the
//! worker and the `generate` command open a model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};

use super::files::{Component, ConfigText, WeightVariant};
use super::hash::{file_sha256, model_hash, MODEL_HASH_LEN};
use super::hub::{resolve_config, resolve_model};
use super::options::PredictionType;
use super::single_file::builtin::with_value;
use super::single_file::{is_single_file, SingleFileCheckpoint};
use super::source::{ComponentWeights, DiffusersFolder, ModelSource, SharedSource};
use super::vae_override::VaeOverride;
use crate::error::Result;
use crate::tokenizer::ClipTokenizer;

/// What to load.
#[derive(Debug, Clone, Default)]
pub struct ModelRequest {
    /// A diffusers folder, a Hugging Face repo id, or a single-file checkpoint.
    pub model: String,
    /// For a single file: a diffusers folder or repo id whose configs and
    /// tokenizers replace the built-in ones (ignored for folders and repos).
    pub config: Option<String>,
    /// A VAE replacing the model's (see [`super::vae_override`]).
    pub vae: Option<String>,
    /// Overrides what the scheduler config says the UNet predicts.
    pub prediction_type: Option<PredictionType>,
    /// Which stored precision of a diffusers folder's weights to read.
    pub variant: WeightVariant,
}

/// A model opened for loading.
pub struct OpenedModel {
    /// Its parts.
    pub source: SharedSource,
    /// What its hash is taken of.
    hashed: Hashed,
}

/// Where the short model hash comes from.
enum Hashed {
    /// The UNet weights of a diffusers folder.
    Folder(PathBuf, WeightVariant),
    /// The whole checkpoint file, as AUTOMATIC1111 hashes it.
    File(PathBuf),
}

impl OpenedModel {
    /// The short hash of the weights for PNG metadata: the first 10 hex digits
    /// of the SHA-256 of a single file (AUTOMATIC1111's "Model hash"), or of a
    /// folder's UNet weights ([`model_hash`]). Reads the file unless it is in
    /// the Hugging Face cache.
    pub fn hash(&self) -> Result<String> {
        match &self.hashed {
            Hashed::Folder(folder, variant) => model_hash(folder, *variant),
            Hashed::File(path) => Ok(file_sha256(path)?[..MODEL_HASH_LEN].to_string()),
        }
    }
}

/// Opens the model `request` names: resolves folders and repo ids (fetching
/// what is missing), reads a single file's header and detects its
/// architecture, opens the replacement VAE. No weight is read yet.
pub fn open_model(request: &ModelRequest) -> Result<OpenedModel> {
    let path = Path::new(&request.model);
    let (source, hashed): (SharedSource, Hashed) = if is_single_file(path) {
        let configs = match &request.config {
            Some(spec) => Some(DiffusersFolder::open(
                &resolve_config(spec)?,
                request.variant,
            )?),
            None => None,
        };
        let checkpoint = SingleFileCheckpoint::open(path, configs, request.prediction_type)?;
        (Arc::new(checkpoint), Hashed::File(path.to_path_buf()))
    } else {
        let folder = resolve_model(&request.model, request.variant)?;
        tracing::info!(folder = %folder.display(), "diffusers folder");
        let source = DiffusersFolder::open(&folder, request.variant)?;
        (Arc::new(source), Hashed::Folder(folder, request.variant))
    };
    let vae = match &request.vae {
        Some(spec) => Some(VaeOverride::open(spec, request.variant)?),
        None => None,
    };
    let source: SharedSource = if vae.is_some() || request.prediction_type.is_some() {
        Arc::new(Customized {
            inner: source,
            vae,
            prediction_type: request.prediction_type,
        })
    } else {
        source
    };
    Ok(OpenedModel { source, hashed })
}

/// A source with its VAE replaced and/or its prediction type overridden.
pub struct Customized {
    inner: SharedSource,
    vae: Option<VaeOverride>,
    prediction_type: Option<PredictionType>,
}

impl ModelSource for Customized {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn index_origin(&self) -> PathBuf {
        self.inner.index_origin()
    }

    fn has(&self, component: Component) -> bool {
        self.inner.has(component)
    }

    fn config(&self, component: Component) -> Result<ConfigText> {
        match (&self.vae, component) {
            (Some(vae), Component::Vae) => vae.config(|| self.inner.config(component)),
            _ => self.inner.config(component),
        }
    }

    fn scheduler_config(&self) -> Result<ConfigText> {
        let config = self.inner.scheduler_config()?;
        Ok(match self.prediction_type {
            Some(prediction) => with_value(config, "prediction_type", prediction.as_str().into()),
            None => config,
        })
    }

    fn tokenizer(&self, encoder: Component) -> Result<ClipTokenizer> {
        self.inner.tokenizer(encoder)
    }

    fn weights(
        &self,
        component: Component,
        dtype: DType,
        device: &Device,
    ) -> Result<ComponentWeights> {
        match (&self.vae, component) {
            (Some(vae), Component::Vae) => {
                let config = self.config(component)?;
                vae.weights(&config, dtype, device)
            }
            _ => self.inner.weights(component, dtype, device),
        }
    }

    fn force_zeros_for_empty_prompt(&self) -> bool {
        self.inner.force_zeros_for_empty_prompt()
    }
}
