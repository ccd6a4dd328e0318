//! Stable Diffusion model core.
//!
//! Our own CLIP text encoder, UNet, VAE and schedulers on `candle-core` and
//! `candle-nn`, configured entirely from a diffusers-layout model folder, plus the
//! text-to-image pipeline that ties them together. No HTTP lives here.
#![deny(missing_docs)]

pub mod error;
pub mod layers;
pub mod unet;
pub mod vae;

pub use error::{Error, Result};
