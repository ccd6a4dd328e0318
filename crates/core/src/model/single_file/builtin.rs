//! The standard architectures a checkpoint's keys identify, and their
//! diffusers configs, built into the binary so a checkpoint loads offline with
//! nothing beside it.
//!
//! The configs are those of the public diffusers repositories diffusers'
//! `from_single_file` takes them from: SD 1.5 (and its inpainting model),
//! SD 2.1 (768 px, v-prediction) and SD 2 base (512 px, epsilon; SD 2
//! inpainting too), SDXL base 1.0 (and the SDXL inpainting 0.1 model). An
//! inpainting model differs only in its UNet's 9 input channels.

use std::path::PathBuf;

use super::super::files::{Component, ConfigText};
use super::super::options::PredictionType;
use super::super::profile::ModelFamily;

/// A standard Stable Diffusion architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Architecture {
    /// SD 1.x, SD 2.x or SDXL.
    pub family: ModelFamily,
    /// Whether the UNet takes the 9 channels of an inpainting model.
    pub inpainting: bool,
    /// What the UNet predicts (SD 2.x: v-prediction at 768 px, epsilon at 512 px).
    pub prediction: PredictionType,
}

impl Architecture {
    /// What it is, in words, for logs.
    pub fn describe(&self) -> String {
        let base = match (self.family, self.prediction) {
            (ModelFamily::Sd1, _) => "SD 1.5",
            (ModelFamily::Sd2, PredictionType::VPrediction) => "SD 2.x 768 (v-prediction)",
            (ModelFamily::Sd2, PredictionType::Epsilon) => "SD 2.x 512 (epsilon)",
            (ModelFamily::Sdxl, _) => "SDXL base",
        };
        if self.inpainting {
            format!("{base} inpainting")
        } else {
            base.to_string()
        }
    }

    /// The folder of its configs in `assets/single-file-configs/`.
    fn folder(&self) -> &'static str {
        match self.family {
            ModelFamily::Sd1 => "sd1",
            ModelFamily::Sd2 => "sd2",
            ModelFamily::Sdxl => "sdxl",
        }
    }

    /// The built-in `config.json` of `component` (`None` for SDXL's second
    /// text encoder outside SDXL).
    pub fn config(&self, component: Component) -> Option<ConfigText> {
        let text = match (self.family, component) {
            (ModelFamily::Sd1, Component::Unet) => SD1_UNET,
            (ModelFamily::Sd1, Component::Vae) => SD1_VAE,
            (ModelFamily::Sd1, Component::TextEncoder) => SD1_TEXT,
            (ModelFamily::Sd2, Component::Unet) => SD2_UNET,
            (ModelFamily::Sd2, Component::Vae) => SD2_VAE,
            (ModelFamily::Sd2, Component::TextEncoder) => SD2_TEXT,
            (ModelFamily::Sdxl, Component::Unet) => SDXL_UNET,
            (ModelFamily::Sdxl, Component::Vae) => SDXL_VAE,
            (ModelFamily::Sdxl, Component::TextEncoder) => SDXL_TEXT,
            (ModelFamily::Sdxl, Component::TextEncoder2) => SDXL_TEXT_2,
            (_, Component::TextEncoder2) => return None,
        };
        let mut config = ConfigText {
            origin: self.origin(&format!("{}.json", component.folder())),
            text: text.to_string(),
        };
        if component == Component::Unet {
            if self.inpainting {
                config = with_value(config, "in_channels", 9.into());
            }
            if self.family == ModelFamily::Sd2 && self.prediction == PredictionType::Epsilon {
                config = with_value(config, "sample_size", 64.into());
            }
        }
        Some(config)
    }

    /// The built-in scheduler config.
    pub fn scheduler_config(&self) -> ConfigText {
        let (file, text) = match (self.family, self.prediction) {
            (ModelFamily::Sd1, _) => ("scheduler.json", SD1_SCHEDULER),
            (ModelFamily::Sd2, PredictionType::VPrediction) => {
                ("scheduler-v_prediction.json", SD2_SCHEDULER_V)
            }
            (ModelFamily::Sd2, PredictionType::Epsilon) => {
                ("scheduler-epsilon.json", SD2_SCHEDULER_EPSILON)
            }
            (ModelFamily::Sdxl, _) => ("scheduler.json", SDXL_SCHEDULER),
        };
        ConfigText {
            origin: self.origin(file),
            text: text.to_string(),
        }
    }

    /// The name standing for a built-in file in errors.
    fn origin(&self, file: &str) -> PathBuf {
        PathBuf::from(format!(
            "sd-core/assets/single-file-configs/{}/{file}",
            self.folder()
        ))
    }
}

/// `config` with `key` set to `value` (the origin unchanged).
pub fn with_value(config: ConfigText, key: &str, value: serde_json::Value) -> ConfigText {
    let patched = serde_json::from_str::<serde_json::Value>(&config.text)
        .ok()
        .and_then(|mut json| {
            json.as_object_mut()?.insert(key.to_string(), value);
            serde_json::to_string_pretty(&json).ok()
        });
    match patched {
        Some(text) => ConfigText {
            origin: config.origin,
            text,
        },
        // Not a JSON object: left as it is, for its parser to name the fault.
        None => config,
    }
}

macro_rules! asset {
    ($path:literal) => {
        include_str!(concat!("../../../assets/single-file-configs/", $path))
    };
}

const SD1_UNET: &str = asset!("sd1/unet.json");
const SD1_VAE: &str = asset!("sd1/vae.json");
const SD1_TEXT: &str = asset!("sd1/text_encoder.json");
const SD1_SCHEDULER: &str = asset!("sd1/scheduler.json");
const SD2_UNET: &str = asset!("sd2/unet.json");
const SD2_VAE: &str = asset!("sd2/vae.json");
const SD2_TEXT: &str = asset!("sd2/text_encoder.json");
const SD2_SCHEDULER_V: &str = asset!("sd2/scheduler-v_prediction.json");
const SD2_SCHEDULER_EPSILON: &str = asset!("sd2/scheduler-epsilon.json");
const SDXL_UNET: &str = asset!("sdxl/unet.json");
const SDXL_VAE: &str = asset!("sdxl/vae.json");
const SDXL_TEXT: &str = asset!("sdxl/text_encoder.json");
const SDXL_TEXT_2: &str = asset!("sdxl/text_encoder_2.json");
const SDXL_SCHEDULER: &str = asset!("sdxl/scheduler.json");
