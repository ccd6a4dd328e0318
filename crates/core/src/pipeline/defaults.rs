//! The values a generation takes for what it leaves out, decided in one place
//! for every entry point (the worker's requests and the `generate` command).
//!
//! Precedence, first that has a value wins: what the request or the command
//! line gives; the preset in force (named by `--sd-version`, or the one whose
//! repository the model is); the model folder's own configs (its scheduler,
//! its native size); the base preset of the model's family; fixed fallbacks.

use super::params::VaeDecoder;
use crate::model::ModelProfile;
use crate::presets::{self, Preset};
use crate::prompt::PromptSyntax;
use crate::schedulers::SchedulerKind;

/// Steps when neither a preset nor the family has any.
const FALLBACK_STEPS: usize = 25;
/// Guidance scale when neither a preset nor the family has any.
const FALLBACK_GUIDANCE_SCALE: f64 = 7.5;

/// The values a generation takes when it leaves them out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Defaults {
    /// Image width in pixels.
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Denoising steps.
    pub steps: usize,
    /// Classifier-free guidance scale.
    pub guidance_scale: f64,
    /// The scheduler.
    pub scheduler: SchedulerKind,
    /// How prompts are read (A1111's syntax unless the caller says otherwise).
    pub prompt_syntax: PromptSyntax,
    /// Which autoencoder decodes images (the full one unless the caller says otherwise).
    pub decoder: VaeDecoder,
}

impl Defaults {
    /// The defaults for `model` under `preset` (see the module doc for the order).
    pub fn resolve(preset: Option<&Preset>, model: &ModelProfile) -> Self {
        let base = presets::for_family(model.family);
        let (width, height) = match preset {
            Some(p) => (p.width as usize, p.height as usize),
            None => model.native_size,
        };
        let steps = preset.or(base).map_or(FALLBACK_STEPS, |p| p.steps as usize);
        let guidance_scale = preset
            .or(base)
            .map_or(FALLBACK_GUIDANCE_SCALE, |p| p.guidance_scale);
        Self {
            width,
            height,
            steps,
            guidance_scale,
            scheduler: preset.and_then(|p| p.scheduler).unwrap_or(model.scheduler),
            prompt_syntax: PromptSyntax::default(),
            decoder: VaeDecoder::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelFamily;

    fn sdxl_folder(scheduler: SchedulerKind) -> ModelProfile {
        ModelProfile {
            family: ModelFamily::Sdxl,
            inpainting: false,
            native_size: (1024, 1024),
            vae_scale_factor: 8,
            scheduler,
            step_limits: Default::default(),
            max_clip_skip: 11,
            tiny_decoder: false,
            precision: Default::default(),
        }
    }

    #[test]
    fn a_folder_without_a_preset_keeps_its_scheduler_and_size() {
        let model = sdxl_folder(SchedulerKind::EulerA);
        let d = Defaults::resolve(None, &model);
        assert_eq!(d.scheduler, SchedulerKind::EulerA);
        assert_eq!((d.width, d.height), (1024, 1024));
        let xl = presets::find("xl").unwrap();
        assert_eq!(
            (d.steps, d.guidance_scale),
            (xl.steps as usize, xl.guidance_scale)
        );
    }

    #[test]
    fn a_preset_wins_over_the_folder_and_falls_back_to_it() {
        let model = sdxl_folder(SchedulerKind::Ddim);
        let turbo = presets::find("turbo").unwrap();
        let d = Defaults::resolve(Some(turbo), &model);
        assert_eq!(d.scheduler, SchedulerKind::EulerA);
        assert_eq!((d.width, d.steps, d.guidance_scale), (512, 1, 0.0));
        let v15 = presets::find("v1-5").unwrap();
        assert_eq!(
            Defaults::resolve(Some(v15), &model).scheduler,
            SchedulerKind::Ddim
        );
    }
}
