//! Named model presets: `--sd-version v1-5` and friends.
//!
//! Each preset names a public diffusers repository on the Hugging Face Hub and
//! the generation defaults that suit it. The worker and the `generate` command
//! apply a preset's defaults to any request that leaves a value out
//! ([`crate::pipeline::Defaults`] says in which order).
//!
//! | name       | repository                                   | size | steps | guidance | scheduler            |
//! |------------|----------------------------------------------|------|-------|----------|----------------------|
//! | `v1-5`     | `stable-diffusion-v1-5/stable-diffusion-v1-5`| 512  | 25    | 7.5      | the folder's (PNDM)  |
//! | `v2-1`     | `stabilityai/stable-diffusion-2-1`           | 768  | 25    | 7.5      | the folder's (DDIM)  |
//! | `xl`       | `stabilityai/stable-diffusion-xl-base-1.0`   | 1024 | 30    | 5.0      | `euler`              |
//! | `turbo`    | `stabilityai/sdxl-turbo`                     | 512  | 1     | 0.0      | `euler_a`            |
//! | `sd-turbo` | `stabilityai/sd-turbo`                       | 512  | 1     | 0.0      | `euler_a`            |

use crate::model::ModelFamily;
use crate::schedulers::SchedulerKind;

/// One named model and its generation defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preset {
    /// The name `--sd-version` takes.
    pub name: &'static str,
    /// The Hugging Face repo id of the diffusers folder.
    pub repo: &'static str,
    /// The model family the repository holds.
    pub family: ModelFamily,
    /// Whether this is a distilled few-step model rather than its family's base.
    pub distilled: bool,
    /// Default image width in pixels.
    pub width: u32,
    /// Default image height in pixels.
    pub height: u32,
    /// Default denoising steps.
    pub steps: u32,
    /// Default classifier-free guidance scale (0 runs the conditional pass only).
    pub guidance_scale: f64,
    /// Default scheduler; `None` keeps the one in the model folder's `scheduler/`.
    pub scheduler: Option<SchedulerKind>,
}

/// Every preset, base models of each family before their distilled variants.
pub const PRESETS: [Preset; 5] = [
    Preset {
        name: "v1-5",
        repo: "stable-diffusion-v1-5/stable-diffusion-v1-5",
        family: ModelFamily::Sd1,
        distilled: false,
        width: 512,
        height: 512,
        steps: 25,
        guidance_scale: 7.5,
        scheduler: None,
    },
    Preset {
        name: "v2-1",
        repo: "stabilityai/stable-diffusion-2-1",
        family: ModelFamily::Sd2,
        distilled: false,
        width: 768,
        height: 768,
        steps: 25,
        guidance_scale: 7.5,
        scheduler: None,
    },
    Preset {
        name: "xl",
        repo: "stabilityai/stable-diffusion-xl-base-1.0",
        family: ModelFamily::Sdxl,
        distilled: false,
        width: 1024,
        height: 1024,
        steps: 30,
        guidance_scale: 5.0,
        scheduler: Some(SchedulerKind::Euler),
    },
    Preset {
        name: "turbo",
        repo: "stabilityai/sdxl-turbo",
        family: ModelFamily::Sdxl,
        distilled: true,
        width: 512,
        height: 512,
        steps: 1,
        guidance_scale: 0.0,
        scheduler: Some(SchedulerKind::EulerA),
    },
    Preset {
        name: "sd-turbo",
        repo: "stabilityai/sd-turbo",
        family: ModelFamily::Sd2,
        distilled: true,
        width: 512,
        height: 512,
        steps: 1,
        guidance_scale: 0.0,
        scheduler: Some(SchedulerKind::EulerA),
    },
];

/// The preset with this name (`v1-5`, `v2-1`, `xl`, `turbo`, `sd-turbo`).
pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// The preset whose repository is this repo id, compared without case.
pub fn by_repo(repo: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.repo.eq_ignore_ascii_case(repo))
}

/// The base (non-distilled) preset of a model family, for a model given
/// without a preset.
pub fn for_family(family: ModelFamily) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.family == family && !p.distilled)
}

/// The preset in force for `model` (a repo id or a folder): the one named, or
/// else the one whose repository `model` is.
pub fn in_force(named: Option<&'static Preset>, model: &str) -> Option<&'static Preset> {
    named.or_else(|| by_repo(model))
}

/// Every preset name, comma-separated, for help and error texts.
pub fn names() -> String {
    PRESETS
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_find_each_preset() {
        for p in &PRESETS {
            assert_eq!(find(p.name), Some(p));
            assert_eq!(by_repo(&p.repo.to_uppercase()), Some(p));
            assert_eq!(p.width % 8, 0);
            assert_eq!(p.height % 8, 0);
            assert!((1..=150).contains(&p.steps));
        }
        assert_eq!(find("v3"), None);
        assert_eq!(names(), "v1-5, v2-1, xl, turbo, sd-turbo");
    }

    #[test]
    fn turbo_presets_are_one_step_without_guidance() {
        for name in ["turbo", "sd-turbo"] {
            let p = find(name).unwrap();
            assert_eq!((p.steps, p.guidance_scale, p.width), (1, 0.0, 512));
            assert_eq!(p.scheduler, Some(SchedulerKind::EulerA));
        }
        assert_eq!(find("xl").unwrap().scheduler, Some(SchedulerKind::Euler));
    }

    #[test]
    fn families_map_to_their_base_preset() {
        assert_eq!(for_family(ModelFamily::Sd1).unwrap().name, "v1-5");
        assert_eq!(for_family(ModelFamily::Sd2).unwrap().name, "v2-1");
        assert_eq!(for_family(ModelFamily::Sdxl).unwrap().name, "xl");
    }
}
