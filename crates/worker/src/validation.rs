//! Turning a wire request into a [`ValidJob`]: defaults filled in from the
//! worker's preset or model family, every bound checked, the seed chosen.
//!
//! Only a `ValidJob` reaches the queue and the engine, so nothing past this
//! module has to re-check a request.

use sd_contract::{GenerationDefaults, ImageGenerationRequest, JobParams, JobRequest, Limits};

use crate::error::ApiError;

/// A request that passed validation, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidJob {
    params: JobParams,
}

impl ValidJob {
    /// The parameters the job runs with.
    pub fn params(&self) -> &JobParams {
        &self.params
    }
}

/// The bounds of [`validate`] that are not per-worker.
pub const MAX_STEPS: u32 = 150;
/// The largest guidance scale a job may ask for.
pub const MAX_GUIDANCE_SCALE: f64 = 30.0;
/// Width and height must be multiples of this (the VAE's downsampling factor).
pub const SIZE_MULTIPLE: u32 = 8;

/// Validates a request against the worker's defaults and limits.
pub fn validate(
    request: JobRequest,
    defaults: &GenerationDefaults,
    limits: &Limits,
) -> Result<ValidJob, ApiError> {
    match request {
        JobRequest::ImageGeneration(req) => validate_generation(req, defaults, limits),
        other => Err(ApiError::NotImplemented {
            operation: other.operation(),
        }),
    }
}

fn validate_generation(
    req: ImageGenerationRequest,
    defaults: &GenerationDefaults,
    limits: &Limits,
) -> Result<ValidJob, ApiError> {
    if req.prompt.trim().is_empty() {
        return Err(ApiError::invalid("prompt", "must not be empty"));
    }
    if req.loras.as_ref().is_some_and(|l| !l.is_empty()) {
        return Err(ApiError::invalid(
            "loras",
            "LoRA adapters are not supported by this worker; send an empty list or null",
        ));
    }
    let steps = req.steps.unwrap_or(defaults.steps);
    if !(1..=MAX_STEPS).contains(&steps) {
        return Err(ApiError::invalid(
            "steps",
            format!("must be between 1 and {MAX_STEPS}, got {steps}"),
        ));
    }
    let guidance_scale = req.guidance_scale.unwrap_or(defaults.guidance_scale);
    if !(0.0..=MAX_GUIDANCE_SCALE).contains(&guidance_scale) {
        return Err(ApiError::invalid(
            "guidance_scale",
            format!("must be between 0 and {MAX_GUIDANCE_SCALE}, got {guidance_scale}"),
        ));
    }
    let width = check_size("width", req.width.unwrap_or(defaults.width), limits)?;
    let height = check_size("height", req.height.unwrap_or(defaults.height), limits)?;
    Ok(ValidJob {
        params: JobParams {
            prompt: req.prompt,
            negative_prompt: req.negative_prompt,
            steps,
            guidance_scale,
            width,
            height,
            seed: req.seed.unwrap_or_else(random_seed),
            scheduler: req.scheduler.unwrap_or(defaults.scheduler),
        },
    })
}

fn check_size(field: &'static str, value: u32, limits: &Limits) -> Result<u32, ApiError> {
    if !value.is_multiple_of(limits.size_multiple) {
        return Err(ApiError::invalid(
            field,
            format!(
                "must be a multiple of {}, got {value}",
                limits.size_multiple
            ),
        ));
    }
    if !(limits.min_size..=limits.max_size).contains(&value) {
        return Err(ApiError::invalid(
            field,
            format!(
                "must be between {} and {}, got {value}",
                limits.min_size, limits.max_size
            ),
        ));
    }
    Ok(value)
}

/// A seed for a request that gave none. Seeds stay below 2^32, as in
/// AUTOMATIC1111, so JavaScript clients can read them back exactly.
fn random_seed() -> u64 {
    u64::from(rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use sd_contract::{ErrorCode, ImageTransformRequest, LoraConfig, SchedulerKind};

    use super::*;

    fn defaults() -> GenerationDefaults {
        GenerationDefaults {
            width: 512,
            height: 512,
            steps: 25,
            guidance_scale: 7.5,
            scheduler: SchedulerKind::Pndm,
        }
    }

    fn limits() -> Limits {
        Limits {
            min_size: 64,
            max_size: 1024,
            size_multiple: 8,
            max_steps: MAX_STEPS,
            max_guidance_scale: MAX_GUIDANCE_SCALE,
            max_queue: 4,
            max_body_bytes: 1 << 20,
        }
    }

    fn generation(prompt: &str) -> ImageGenerationRequest {
        ImageGenerationRequest {
            prompt: prompt.into(),
            ..Default::default()
        }
    }

    fn field_of(req: ImageGenerationRequest) -> String {
        let err = validate(JobRequest::ImageGeneration(req), &defaults(), &limits()).unwrap_err();
        let detail = err.detail();
        assert_eq!(detail.code, ErrorCode::InvalidRequest, "{detail:?}");
        detail.field.unwrap()
    }

    #[test]
    fn defaults_fill_missing_values_and_a_seed_is_chosen() {
        let job = validate(
            JobRequest::ImageGeneration(generation("a cat")),
            &defaults(),
            &limits(),
        )
        .unwrap();
        let p = job.params();
        assert_eq!((p.width, p.height, p.steps), (512, 512, 25));
        assert_eq!(p.guidance_scale, 7.5);
        assert_eq!(p.scheduler, SchedulerKind::Pndm);
        assert!(p.seed < 1 << 32);
    }

    #[test]
    fn given_values_win() {
        let req = ImageGenerationRequest {
            steps: Some(3),
            guidance_scale: Some(0.0),
            width: Some(64),
            height: Some(96),
            seed: Some(42),
            scheduler: Some(SchedulerKind::EulerA),
            loras: Some(vec![]),
            ..generation("a cat")
        };
        let job = validate(JobRequest::ImageGeneration(req), &defaults(), &limits()).unwrap();
        let p = job.params();
        assert_eq!((p.width, p.height, p.steps, p.seed), (64, 96, 3, 42));
        assert_eq!(p.scheduler, SchedulerKind::EulerA);
    }

    #[test]
    fn each_bad_value_names_its_field() {
        assert_eq!(field_of(generation("  ")), "prompt");
        for steps in [0, 151] {
            let req = ImageGenerationRequest {
                steps: Some(steps),
                ..generation("x")
            };
            assert_eq!(field_of(req), "steps");
        }
        for g in [-0.5, 30.5, f64::NAN] {
            let req = ImageGenerationRequest {
                guidance_scale: Some(g),
                ..generation("x")
            };
            assert_eq!(field_of(req), "guidance_scale");
        }
        for w in [100, 56, 2048] {
            let req = ImageGenerationRequest {
                width: Some(w),
                ..generation("x")
            };
            assert_eq!(field_of(req), "width");
        }
        let req = ImageGenerationRequest {
            height: Some(513),
            ..generation("x")
        };
        assert_eq!(field_of(req), "height");
        let req = ImageGenerationRequest {
            loras: Some(vec![LoraConfig {
                path: "a.safetensors".into(),
                strength: None,
            }]),
            ..generation("x")
        };
        assert_eq!(field_of(req), "loras");
    }

    #[test]
    fn image_to_image_is_not_implemented() {
        let req = JobRequest::ImageTransform(ImageTransformRequest {
            prompt: "x".into(),
            input_image: "AAAA".into(),
            ..Default::default()
        });
        let err = validate(req, &defaults(), &limits()).unwrap_err();
        assert_eq!(err.detail().code, ErrorCode::NotImplemented);
    }
}
