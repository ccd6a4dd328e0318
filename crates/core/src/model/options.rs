//! How a model's weights are read and kept.

use candle_core::DType;

use super::files::{Component, WeightVariant};
use crate::error::{Error, Param, Result};
use crate::layers::is_half;

/// How [`crate::pipeline::StableDiffusion`] reads a model's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Which stored weight files of a diffusers folder to read.
    pub variant: WeightVariant,
    /// The dtype the UNet's and the text encoders' convolution and projection
    /// matrices are kept in: f32, or bf16/f16 for half the memory. bf16 weights
    /// run on the bf16 kernel where the CPU has AVX512-BF16 (operands rounded
    /// to bf16, sums in f32; see [`crate::layers::bf16`]); otherwise 16-bit
    /// weights are widened per layer call and every computation stays f32. The
    /// VAE, norms, embeddings and biases are f32 unless `compute_dtype` is half.
    pub weight_dtype: DType,
    /// The dtype activations are computed in: f32, or f16/bf16 (then equal to
    /// `weight_dtype`, so no f32 copy of a weight is made). In half precision
    /// the UNet, the text encoders and the VAE run their matrix products,
    /// convolutions and activations in that dtype, with the delicate parts in
    /// f32 as diffusers keeps them: the timestep embedding and its MLP, group
    /// and layer norm statistics, the attention softmax, the scheduler's
    /// arithmetic and the latents between steps (the UNet casts its input down
    /// and its output up), and in f16 the VAE of an SDXL model whose config
    /// sets `force_upcast` (see [`LoadOptions::vae_dtype`]).
    pub compute_dtype: DType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            variant: WeightVariant::Full,
            weight_dtype: DType::F32,
            compute_dtype: DType::F32,
        }
    }
}

impl LoadOptions {
    /// Weights stored in `weight_dtype`, computation in f32.
    pub fn stored(variant: WeightVariant, weight_dtype: DType) -> Self {
        Self {
            variant,
            weight_dtype,
            compute_dtype: DType::F32,
        }
    }

    /// Weights stored and activations computed in `dtype` (f32, f16 or bf16).
    pub fn computed(variant: WeightVariant, dtype: DType) -> Self {
        Self {
            variant,
            weight_dtype: dtype,
            compute_dtype: dtype,
        }
    }

    /// Whether activations are computed in f16 or bf16.
    pub fn half_compute(&self) -> bool {
        is_half(self.compute_dtype)
    }

    /// The dtype `component`'s weights are read in: `weight_dtype` for the UNet
    /// and the text encoders. The VAE's depends on its config and the model's
    /// family ([`LoadOptions::vae_dtype`], which [`crate::model::load_vae`]
    /// asks); without them this answers f32, its dtype whenever it is unsure.
    pub fn dtype_for(&self, component: Component) -> DType {
        match component {
            Component::Unet | Component::TextEncoder | Component::TextEncoder2 => self.weight_dtype,
            Component::Vae => DType::F32,
        }
    }

    /// The dtype the VAE's weights are read and its activations computed in:
    /// f32 when computing in f32; the compute dtype in half precision, except
    /// f16 for SDXL (`sdxl`) with `force_upcast` in the VAE config, which
    /// diffusers' SDXL pipelines upcast to f32 (that VAE overflows f16; the
    /// fp16-fix VAE sets `force_upcast: false`). bf16, with f32's range, is
    /// never upcast, nor are SD 1.x/2.x VAEs, as in diffusers.
    pub fn vae_dtype(&self, force_upcast: bool, sdxl: bool) -> DType {
        let upcast = self.compute_dtype == DType::F16 && sdxl && force_upcast;
        if self.half_compute() && !upcast {
            self.compute_dtype
        } else {
            DType::F32
        }
    }

    /// Rejects a weight dtype other than f32, bf16 or f16, and a half compute
    /// dtype the weights are not stored in.
    pub fn validate(&self) -> Result<()> {
        if !matches!(self.weight_dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(Error::param(
                Param::WeightDtype,
                format!(
                    "weights can be stored in f32, bf16 or f16, not {:?}",
                    self.weight_dtype
                ),
            ));
        }
        match self.compute_dtype {
            DType::F32 => Ok(()),
            dtype if is_half(dtype) && dtype == self.weight_dtype => Ok(()),
            dtype if is_half(dtype) => Err(Error::param(
                Param::ComputeDtype,
                format!(
                    "computing in {dtype:?} needs the weights stored in {dtype:?}, not {:?}",
                    self.weight_dtype
                ),
            )),
            other => Err(Error::param(
                Param::ComputeDtype,
                format!("activations can be computed in f32, bf16 or f16, not {other:?}"),
            )),
        }
    }
}

/// What a loaded model stores and computes in which dtype
/// ([`crate::pipeline::StableDiffusion::precision`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Precision {
    /// The UNet's and the text encoders' weight matrices.
    pub weights: DType,
    /// The UNet's activations (its input is cast down and its prediction up:
    /// latents and scheduler arithmetic stay f32).
    pub unet: DType,
    /// The text encoders' layers (embeddings and outputs are f32).
    pub text_encoders: DType,
    /// The VAE's weights and activations.
    pub vae: DType,
    /// What computes the attention ([`crate::layers::attention::kernel_name`]).
    pub attention: &'static str,
}

impl Default for Precision {
    /// Everything in f32 on the CPU.
    fn default() -> Self {
        Self {
            weights: DType::F32,
            unet: DType::F32,
            text_encoders: DType::F32,
            vae: DType::F32,
            attention: "cpu_blocked",
        }
    }
}

/// What the UNet predicts, as diffusers' scheduler configs name it: the noise
/// (`epsilon`) or the velocity (`v_prediction`, SD 2.x at 768 px).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PredictionType {
    /// The noise that was added (SD 1.x, SD 2.x base, SDXL).
    Epsilon,
    /// The velocity (SD 2.x 768 px models).
    VPrediction,
}

impl PredictionType {
    /// The name diffusers' scheduler configs use.
    pub fn as_str(self) -> &'static str {
        match self {
            PredictionType::Epsilon => "epsilon",
            PredictionType::VPrediction => "v_prediction",
        }
    }
}

impl std::str::FromStr for PredictionType {
    type Err = String;

    /// Parses `epsilon` or `v_prediction` (`v` also).
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "epsilon" => Ok(PredictionType::Epsilon),
            "v_prediction" | "v" => Ok(PredictionType::VPrediction),
            other => Err(format!(
                "unknown prediction type `{other}` (expected epsilon or v_prediction)"
            )),
        }
    }
}

impl std::fmt::Display for PredictionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
