//! How a model's weights are read and kept.

use candle_core::DType;

use super::files::{Component, WeightVariant};
use crate::error::{Error, Param, Result};

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
    /// VAE, norms, embeddings and biases are always f32.
    pub weight_dtype: DType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            variant: WeightVariant::Full,
            weight_dtype: DType::F32,
        }
    }
}

impl LoadOptions {
    /// The dtype `component`'s weights are read in: `weight_dtype` for the UNet
    /// and the text encoders, f32 for the VAE (small, and its decoder is the most
    /// precision-sensitive part).
    pub fn dtype_for(&self, component: Component) -> DType {
        match component {
            Component::Unet | Component::TextEncoder | Component::TextEncoder2 => self.weight_dtype,
            Component::Vae => DType::F32,
        }
    }

    /// Rejects a weight dtype other than f32, bf16 or f16.
    pub fn validate(&self) -> Result<()> {
        match self.weight_dtype {
            DType::F32 | DType::BF16 | DType::F16 => Ok(()),
            other => Err(Error::param(
                Param::WeightDtype,
                format!("weights can be stored in f32, bf16 or f16, not {other:?}"),
            )),
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
