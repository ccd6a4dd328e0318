//! Where a pipeline's parts come from.
//!
//! [`crate::pipeline::StableDiffusion`] loads through a [`ModelSource`]: the
//! components it has, each one's config, its weights and, for the text
//! encoders, their tokenizers. [`DiffusersFolder`] reads them from the
//! diffusers layout; other sources (the benchmark's random weights) supply the
//! same parts from elsewhere, and the pipeline built from them is the one jobs run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::files::{
    existing, read_json, weights_error, Component, ComponentFiles, ConfigText, ModelIndex,
    WeightVariant, MODEL_INDEX, SCHEDULER_CONFIG,
};
use crate::error::{Error, Result};
use crate::tokenizer::ClipTokenizer;

/// The parts of a Stable Diffusion model, wherever they are kept.
pub trait ModelSource {
    /// The model's name, as logs and PNG metadata show it.
    fn name(&self) -> String;

    /// The file that lists the components, named in errors about which exist.
    fn index_origin(&self) -> PathBuf;

    /// Whether the model has `component` (only SDXL has a second text encoder).
    fn has(&self, component: Component) -> bool;

    /// The component's `config.json`.
    fn config(&self, component: Component) -> Result<ConfigText>;

    /// The scheduler's config.
    fn scheduler_config(&self) -> Result<ConfigText>;

    /// The tokenizer of a text encoder (`TextEncoder` or `TextEncoder2`).
    fn tokenizer(&self, encoder: Component) -> Result<ClipTokenizer>;

    /// The component's weights, yielding `dtype` on `device` whatever they are stored in.
    fn weights(
        &self,
        component: Component,
        dtype: DType,
        device: &Device,
    ) -> Result<ComponentWeights>;

    /// SDXL: whether an absent negative prompt conditions on zeros rather than
    /// on the encoded empty prompt (diffusers' `force_zeros_for_empty_prompt`).
    fn force_zeros_for_empty_prompt(&self) -> bool {
        true
    }
}

/// A source a loaded model keeps, to rebuild components from (LoRA changes).
pub type SharedSource = Arc<dyn ModelSource + Send + Sync>;

/// One component's weights, with the origin that tensor errors name.
pub struct ComponentWeights {
    vb: VarBuilder<'static>,
    origin: PathBuf,
}

impl ComponentWeights {
    /// Weights read through `vb`; `origin` is the file (or stand-in name) errors show.
    pub fn new(vb: VarBuilder<'static>, origin: impl Into<PathBuf>) -> Self {
        Self {
            vb,
            origin: origin.into(),
        }
    }

    /// The same weights read through another var builder made from this one
    /// (one that adapts or watches what is read).
    pub(crate) fn map_var_builder(
        self,
        map: impl FnOnce(VarBuilder<'static>) -> VarBuilder<'static>,
    ) -> Self {
        Self {
            vb: map(self.vb),
            origin: self.origin,
        }
    }

    /// Builds a module from the weights; a missing tensor or a wrong shape
    /// becomes an error naming the origin and the tensor.
    pub fn build<T, E: Into<Error>>(
        self,
        build: impl FnOnce(VarBuilder<'static>) -> std::result::Result<T, E>,
    ) -> Result<T> {
        build(self.vb).map_err(|e| weights_error(&self.origin, e))
    }
}

/// A diffusers-layout model folder: `model_index.json` and one sub-folder per component.
#[derive(Debug, Clone)]
pub struct DiffusersFolder {
    root: PathBuf,
    index: ModelIndex,
    variant: WeightVariant,
}

impl DiffusersFolder {
    /// Opens a folder, reading its `model_index.json`; `variant` picks the
    /// weight files when both precisions are there.
    pub fn open(root: &Path, variant: WeightVariant) -> Result<Self> {
        Ok(Self {
            root: root.to_path_buf(),
            index: read_json(&root.join(MODEL_INDEX))?,
            variant,
        })
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl ModelSource for DiffusersFolder {
    fn name(&self) -> String {
        self.root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.root.display().to_string())
    }

    fn index_origin(&self) -> PathBuf {
        self.root.join(MODEL_INDEX)
    }

    fn has(&self, component: Component) -> bool {
        self.index.has(component.folder())
    }

    fn config(&self, component: Component) -> Result<ConfigText> {
        ConfigText::read(&existing(&self.root, &component.config_file())?)
    }

    fn scheduler_config(&self) -> Result<ConfigText> {
        ConfigText::read(&self.root.join(SCHEDULER_CONFIG))
    }

    fn tokenizer(&self, encoder: Component) -> Result<ClipTokenizer> {
        let folder = encoder.tokenizer_folder().unwrap_or(encoder.folder());
        ClipTokenizer::from_dir(&self.root.join(folder))
    }

    fn weights(
        &self,
        component: Component,
        dtype: DType,
        device: &Device,
    ) -> Result<ComponentWeights> {
        let files = ComponentFiles::find(&self.root, component, self.variant)?;
        Ok(ComponentWeights::new(
            files.var_builder(dtype, device)?,
            files.weights[0].clone(),
        ))
    }

    fn force_zeros_for_empty_prompt(&self) -> bool {
        self.index
            .components
            .get("force_zeros_for_empty_prompt")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(true)
    }
}
