//! Stable Diffusion model core.
//!
//! Our own CLIP text encoder, UNet, VAE and schedulers on `candle-core` and
//! `candle-nn`, configured entirely from a diffusers-layout model folder, plus the
//! text-to-image pipeline that ties them together. No HTTP lives here.
#![deny(missing_docs)]

pub mod clip;
pub mod error;
pub mod image;
pub mod layers;
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
