//! Getting a model into memory: where its parts come from and what it is.
//!
//! - [`open`]: the model flags (model, `--config`, `--vae`, prediction
//!   type) to the [`ModelSource`] loaded and the hash naming its weights;
//! - [`source`]: the [`ModelSource`] a pipeline loads from, and
//!   [`DiffusersFolder`], the diffusers layout public repositories ship;
//! - [`single_file`]: single-file LDM/SGM checkpoints, their key mappings to
//!   diffusers names and the built-in configs of the standard architectures;
//! - [`vae_override`]: a VAE replacing the model's own;
//! - [`components`]: the UNet and the VAE built from a source;
//! - [`files`]: that layout's file names, config texts and weight files;
//! - [`safetensors`]: weights read straight into their buffers;
//! - [`hub`]: a Hugging Face repo id resolved through the local cache;
//! - [`hash`]: the short hash that names the weights in PNG metadata;
//! - [`profile`]: the family and traits of a loaded model, detected from its
//!   configs, which requests are checked against;
//! - [`options`]: how weights are stored once loaded.

pub mod components;
pub mod files;
pub mod hash;
pub mod hub;
pub mod open;
pub mod options;
pub mod profile;
pub mod safetensors;
pub mod single_file;
pub mod source;
pub mod vae_override;

pub use components::{load_tiny_vae, load_unet, load_vae};
pub use files::{Component, ConfigText, WeightVariant};
pub use hash::model_hash;
pub use hub::model_name;
pub use open::{open_model, ModelRequest, OpenedModel};
pub use options::{LoadOptions, Precision, PredictionType};
pub use profile::{ModelFamily, ModelProfile};
pub use single_file::SingleFileCheckpoint;
pub use source::{ComponentWeights, DiffusersFolder, ModelSource, SharedSource};
