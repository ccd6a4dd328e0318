//! Getting a model into memory: where its parts come from and what it is.
//!
//! - [`source`]: the [`ModelSource`] a pipeline loads from, and
//!   [`DiffusersFolder`], the diffusers layout public repositories ship;
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
pub mod options;
pub mod profile;
pub mod safetensors;
pub mod source;

pub use components::{load_tiny_vae, load_unet, load_vae};
pub use files::{Component, ConfigText, WeightVariant};
pub use hash::model_hash;
pub use hub::model_name;
pub use options::LoadOptions;
pub use profile::{ModelFamily, ModelProfile};
pub use source::{ComponentWeights, DiffusersFolder, ModelSource};
