//! What a loaded model is: its family, read from its configs (never from its
//! name), and the traits requests are checked against.

use crate::clip::{ClipActivation, ClipTextConfig};
use crate::preview::LatentFormat;
use crate::schedulers::{SchedulerConfig, SchedulerKind, StepLimits};

/// Which Stable Diffusion generation a model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelFamily {
    /// SD 1.x: one OpenAI CLIP encoder.
    Sd1,
    /// SD 2.x (and SD-Turbo): one OpenCLIP encoder, often v-prediction.
    Sd2,
    /// SDXL (and SDXL-Turbo): two encoders and size/crop conditioning.
    Sdxl,
}

impl ModelFamily {
    /// Detects the family: two text encoders make SDXL; one OpenCLIP encoder
    /// (GELU) or a v-prediction scheduler makes SD 2.x; anything else is SD 1.x.
    pub fn detect(dual_encoders: bool, text: &ClipTextConfig, scheduler: &SchedulerConfig) -> Self {
        if dual_encoders {
            ModelFamily::Sdxl
        } else if text.hidden_act == ClipActivation::Gelu
            || scheduler.prediction_type == "v_prediction"
        {
            ModelFamily::Sd2
        } else {
            ModelFamily::Sd1
        }
    }

    /// The latent space of the family's VAE, for live previews.
    pub fn latent_format(self) -> LatentFormat {
        match self {
            ModelFamily::Sd1 | ModelFamily::Sd2 => LatentFormat::Sd15,
            ModelFamily::Sdxl => LatentFormat::Sdxl,
        }
    }

    /// The short name reported to clients (`sd1`, `sd2`, `sdxl`).
    pub fn as_str(self) -> &'static str {
        match self {
            ModelFamily::Sd1 => "sd1",
            ModelFamily::Sd2 => "sd2",
            ModelFamily::Sdxl => "sdxl",
        }
    }
}

impl std::str::FromStr for ModelFamily {
    type Err = String;

    /// Parses the short name (`sd1`, `sd2`, `sdxl`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [ModelFamily::Sd1, ModelFamily::Sd2, ModelFamily::Sdxl]
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("unknown model family `{s}` (expected sd1, sd2 or sdxl)"))
    }
}

impl std::fmt::Display for ModelFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a loaded model is and accepts, in a form that can leave the thread
/// that owns the model: request checks and default resolution need only this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelProfile {
    /// The family, detected from the configs.
    pub family: ModelFamily,
    /// Whether the UNet is an inpainting one (9 input channels: latents,
    /// mask, masked picture), which needs a picture and a mask for every image.
    pub inpainting: bool,
    /// The image size the model was trained at, `(width, height)` in pixels.
    pub native_size: (usize, usize),
    /// How many pixels one latent cell covers (8 for every Stable Diffusion VAE).
    pub vae_scale_factor: usize,
    /// The scheduler the model's own scheduler config names.
    pub scheduler: SchedulerKind,
    /// How many steps each scheduler runs on the model's scheduler config.
    pub step_limits: StepLimits,
    /// The largest `clip_skip` the text encoders take (one less than the
    /// shallower encoder's layer count: 11 for SD 1.x and SDXL, 22 for SD 2.x).
    pub max_clip_skip: usize,
    /// Whether a tiny autoencoder is loaded, so images may be decoded with it
    /// ([`crate::pipeline::VaeDecoder::Tiny`]).
    pub tiny_decoder: bool,
    /// What the model stores and computes in which dtype.
    pub precision: super::Precision,
}
