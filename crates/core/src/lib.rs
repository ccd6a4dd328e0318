//! Stable Diffusion model core.
//!
//! Our own CLIP text encoder, UNet, VAE and schedulers on `candle-core` and
//! `candle-nn`, configured entirely from a model's `config.json` files, plus the
//! pipeline that ties them together. [`model`] loads a model and tells what it
//! is; [`pipeline`] holds the parameters, their one check, the defaults and the
//! one denoising loop; [`image`] reads and writes pictures; an [`Interrupt`]
//! stops a generation part-way. No HTTP and no wire field names live here:
//! errors name a [`Param`], and callers spell it.
#![deny(missing_docs)]

pub mod clip;
pub mod embeddings;
pub mod error;
pub mod image;
pub mod interrupt;
pub mod layers;
pub mod lora;
pub mod model;
pub mod pipeline;
pub mod presets;
pub mod preview;
pub mod prompt;
pub mod rng;
pub mod schedulers;
pub mod tokenizer;
pub mod unet;
pub mod vae;

pub use error::{Error, Param, ParamError, Result};
pub use interrupt::Interrupt;
