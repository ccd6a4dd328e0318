//! A diffusers-layout model folder: which files make up each component.
//!
//! Public Stable Diffusion repositories ship one sub-folder per component
//! (`text_encoder/`, `tokenizer/`, `unet/`, `vae/`, `scheduler/`) next to a
//! `model_index.json` that names them. This module finds the config and weight
//! files of each component, choosing between the full-precision and the `fp16`
//! variants, and reads JSON files with errors that name the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::safetensors::SafetensorsReader;
use crate::error::{Error, Result};

/// Which stored precision of the weights to prefer when a repository has both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightVariant {
    /// `*.safetensors`, falling back to `*.fp16.safetensors`.
    #[default]
    Full,
    /// `*.fp16.safetensors`, falling back to `*.safetensors`.
    Fp16,
}

/// The components a text-to-image pipeline reads, by their folder names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    /// The (first) CLIP text encoder.
    TextEncoder,
    /// SDXL's second text encoder.
    TextEncoder2,
    /// The denoising UNet.
    Unet,
    /// The autoencoder.
    Vae,
}

impl Component {
    /// The component's folder inside the model folder.
    pub fn folder(self) -> &'static str {
        match self {
            Component::TextEncoder => "text_encoder",
            Component::TextEncoder2 => "text_encoder_2",
            Component::Unet => "unet",
            Component::Vae => "vae",
        }
    }

    /// The stem of the weight file (`model` for transformers, `diffusion_pytorch_model` for diffusers).
    fn weight_stem(self) -> &'static str {
        match self {
            Component::TextEncoder | Component::TextEncoder2 => "model",
            Component::Unet | Component::Vae => "diffusion_pytorch_model",
        }
    }

    /// The weight files to look for, in order of preference, relative to the model folder.
    ///
    /// Single files come before sharded indexes; the preferred precision before the other.
    pub fn weight_candidates(self, variant: WeightVariant) -> Vec<String> {
        let (dir, stem) = (self.folder(), self.weight_stem());
        let full = [
            format!("{dir}/{stem}.safetensors"),
            format!("{dir}/{stem}.safetensors.index.json"),
        ];
        let half = [
            format!("{dir}/{stem}.fp16.safetensors"),
            format!("{dir}/{stem}.safetensors.index.fp16.json"),
        ];
        let (first, second) = match variant {
            WeightVariant::Full => (full, half),
            WeightVariant::Fp16 => (half, full),
        };
        first.into_iter().chain(second).collect()
    }

    /// The component's `config.json`, relative to the model folder.
    pub fn config_file(self) -> String {
        format!("{}/config.json", self.folder())
    }

    /// The folder of a text encoder's tokenizer (`tokenizer`, `tokenizer_2`);
    /// `None` for the UNet and the VAE.
    pub fn tokenizer_folder(self) -> Option<&'static str> {
        match self {
            Component::TextEncoder => Some("tokenizer"),
            Component::TextEncoder2 => Some("tokenizer_2"),
            Component::Unet | Component::Vae => None,
        }
    }
}

/// The tokenizer files to fetch for the tokenizer in `dir`, relative to the model folder.
///
/// `tokenizer.json` is used when present; the others are what public SD
/// repositories ship and what [`crate::tokenizer`] reads otherwise.
pub fn tokenizer_files(dir: &str) -> [String; 5] {
    [
        format!("{dir}/vocab.json"),
        format!("{dir}/merges.txt"),
        format!("{dir}/tokenizer_config.json"),
        format!("{dir}/special_tokens_map.json"),
        format!("{dir}/tokenizer.json"),
    ]
}

/// A single component's config file, relative to its own folder (a
/// component published alone, such as a tiny autoencoder).
pub const COMPONENT_CONFIG: &str = "config.json";

/// A single diffusers component's weight files, relative to its own folder,
/// `variant`'s precision first.
pub fn component_weight_candidates(variant: WeightVariant) -> [&'static str; 2] {
    let full = "diffusion_pytorch_model.safetensors";
    let half = "diffusion_pytorch_model.fp16.safetensors";
    match variant {
        WeightVariant::Full => [full, half],
        WeightVariant::Fp16 => [half, full],
    }
}

/// The scheduler's config file, relative to the model folder.
pub const SCHEDULER_CONFIG: &str = "scheduler/scheduler_config.json";

/// The pipeline index, relative to the model folder.
pub const MODEL_INDEX: &str = "model_index.json";

/// `model_index.json`: the pipeline class and which components it has.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelIndex {
    /// The diffusers pipeline class, e.g. `StableDiffusionPipeline`.
    #[serde(rename = "_class_name")]
    pub class_name: String,
    /// Component name → `[library, class]`; absent components are `[null, null]`.
    #[serde(flatten)]
    pub components: BTreeMap<String, serde_json::Value>,
}

impl ModelIndex {
    /// Whether the index names a component (a `[library, class]` pair that is not null).
    pub fn has(&self, name: &str) -> bool {
        match self.components.get(name) {
            Some(serde_json::Value::Array(pair)) => pair.iter().any(|v| !v.is_null()),
            _ => false,
        }
    }
}

/// The config and weight files of one model component.
#[derive(Debug, Clone)]
pub struct ComponentFiles {
    /// The component's `config.json`.
    pub config: PathBuf,
    /// Its safetensors files (several when sharded).
    pub weights: Vec<PathBuf>,
}

impl ComponentFiles {
    /// Finds a component's files in `root`, preferring `variant`.
    pub fn find(root: &Path, component: Component, variant: WeightVariant) -> Result<Self> {
        let config = existing(root, &component.config_file())?;
        let candidates = component.weight_candidates(variant);
        let chosen = candidates
            .iter()
            .map(|name| root.join(name))
            .find(|path| path.is_file())
            .ok_or_else(|| Error::MissingFile(root.join(&candidates[0])))?;
        let weights = if chosen.to_string_lossy().ends_with(".json") {
            let dir = chosen.parent().unwrap_or(root);
            shard_names(&chosen)?
                .iter()
                .map(|name| existing(dir, name))
                .collect::<Result<_>>()?
        } else {
            vec![chosen]
        };
        Ok(Self { config, weights })
    }

    /// The weights as a [`VarBuilder`] that yields `dtype` whatever the stored
    /// precision, each tensor read straight into its own buffer (see [`super::safetensors`]).
    pub fn var_builder(&self, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
        let reader = SafetensorsReader::open(&self.weights)?;
        Ok(VarBuilder::from_backend(
            Box::new(reader),
            dtype,
            device.clone(),
        ))
    }
}

/// Names the weight file `origin` in a tensor-level error (a missing tensor, a
/// wrong shape); other errors already name their file and pass through.
pub fn weights_error(origin: &Path, error: impl Into<Error>) -> Error {
    match error.into() {
        Error::Candle(source) => Error::Weights {
            path: origin.to_path_buf(),
            // The message names the tensor; a backtrace (RUST_BACKTRACE) would
            // bury it in a start-up error meant for a person.
            cause: match source {
                candle_core::Error::WithBacktrace { inner, .. } => *inner,
                other => other,
            },
        },
        other => other,
    }
}

/// The shard file names a sharded-weights index (`*.safetensors.index*.json`)
/// lists, relative to its folder, sorted and without repeats.
pub fn shard_names(index: &Path) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct ShardIndex {
        weight_map: BTreeMap<String, String>,
    }
    let parsed: ShardIndex = read_json(index)?;
    let mut files: Vec<String> = parsed.weight_map.into_values().collect();
    files.sort();
    files.dedup();
    if files.is_empty() {
        return Err(Error::invalid_file(index, "weight_map lists no files"));
    }
    Ok(files)
}

/// `root/name` if it is a file, else [`Error::MissingFile`].
pub fn existing(root: &Path, name: &str) -> Result<PathBuf> {
    let path = root.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingFile(path))
    }
}

/// Reads a text file; a missing file is [`Error::MissingFile`], any other failure names the file.
pub fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|cause| {
        if cause.kind() == std::io::ErrorKind::NotFound {
            Error::MissingFile(path.to_path_buf())
        } else {
            Error::Io {
                path: path.to_path_buf(),
                cause,
            }
        }
    })
}

/// Reads and parses a JSON file, naming the file in every error.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    ConfigText::read(path)?.parse()
}

/// The text of a config file and where it came from, so that parse and
/// validation errors name it whatever the model's source.
#[derive(Debug, Clone)]
pub struct ConfigText {
    /// The file (or, for built-in configs, a name standing for it) named in errors.
    pub origin: PathBuf,
    /// The JSON text.
    pub text: String,
}

impl ConfigText {
    /// Reads a config file.
    pub fn read(path: &Path) -> Result<Self> {
        Ok(Self {
            origin: path.to_path_buf(),
            text: read_text(path)?,
        })
    }

    /// Parses the JSON, naming the origin in the error.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.text)
            .map_err(|e| Error::invalid_file(&self.origin, e.to_string()))
    }

    /// Parses the JSON, then runs `check` on it; either error names the origin.
    pub fn parse_checked<T: DeserializeOwned>(
        &self,
        check: impl FnOnce(&T) -> std::result::Result<(), String>,
    ) -> Result<T> {
        let value = self.parse()?;
        check(&value).map_err(|message| Error::invalid_file(&self.origin, message))?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp16_preference_puts_half_files_first() {
        let names = Component::Unet.weight_candidates(WeightVariant::Fp16);
        assert_eq!(names[0], "unet/diffusion_pytorch_model.fp16.safetensors");
        assert_eq!(names[2], "unet/diffusion_pytorch_model.safetensors");
        let names = Component::TextEncoder.weight_candidates(WeightVariant::Full);
        assert_eq!(names[0], "text_encoder/model.safetensors");
    }

    #[test]
    fn model_index_knows_absent_components() {
        let index: ModelIndex = serde_json::from_str(
            r#"{"_class_name":"StableDiffusionPipeline","unet":["diffusers","UNet2DConditionModel"],
                "safety_checker":[null,null],"_diffusers_version":"0.30.0"}"#,
        )
        .unwrap();
        assert!(index.has("unet"));
        assert!(!index.has("safety_checker"));
        assert!(!index.has("text_encoder_2"));
    }

    #[test]
    fn missing_component_names_the_file() {
        let dir = std::env::temp_dir().join("sd-core-missing-component");
        std::fs::create_dir_all(&dir).unwrap();
        let err = ComponentFiles::find(&dir, Component::Vae, WeightVariant::Full).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.to_string().contains("vae/config.json"), "{err}");
    }
}
