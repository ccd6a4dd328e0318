//! Turning a wire request into a [`ValidJob`]: defaults filled in, every
//! bound checked, the seed chosen, and the pictures of image-to-image and
//! inpainting decoded. The worker's own limits are checked here; what the
//! model needs is checked by sd-core's [`GenerateParams::check`] against the
//! loaded model's profile, its parameters named as this request's fields.
//!
//! Only a `ValidJob` reaches the queue and the engine, so nothing past this
//! module has to re-check a request. Decoding pictures is CPU work: callers on
//! the async runtime run [`validate`] on the blocking pool.

use base64::Engine as _;
use sd_contract::limits::{MAX_GUIDANCE_SCALE, MAX_STEPS, MIN_GUIDANCE_SCALE, MIN_STEPS};
use sd_contract::{GenerationFields, JobParams, JobRequest, Limits};
use sd_core::image::DecodedImage;
use sd_core::model::ModelProfile;
use sd_core::pipeline::{random_seed, Defaults, GenerateParams, ImageInput};
use sd_core::{Param, ParamError};

use crate::convert::{field_of, scheduler_from_wire, scheduler_to_wire};
use crate::error::ApiError;

/// A request that passed validation, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidJob {
    params: JobParams,
    generation: GenerateParams,
    preview: bool,
    /// The operation's name for its input picture.
    image_field: &'static str,
}

impl ValidJob {
    /// The parameters the job runs with, as its status reports them.
    pub fn params(&self) -> &JobParams {
        &self.params
    }

    /// The same parameters as the pipeline takes them, pictures decoded.
    pub fn generation(&self) -> &GenerateParams {
        &self.generation
    }

    /// Whether its progress events should carry live previews.
    pub fn wants_preview(&self) -> bool {
        self.preview
    }

    /// The request field a pipeline parameter of this job came from.
    pub fn field_of(&self, param: Param) -> &'static str {
        field_of(param, self.image_field)
    }
}

/// Validates a request against the loaded model, the worker's defaults and its limits.
pub fn validate(
    request: JobRequest,
    model: &ModelProfile,
    defaults: &Defaults,
    limits: &Limits,
) -> Result<ValidJob, ApiError> {
    match request {
        JobRequest::ImageGeneration(req) => {
            validate_job(req.generation, None, model, defaults, limits)
        }
        JobRequest::ImageTransform(req) => {
            let pictures = Pictures {
                image_field: "input_image",
                image: req.input_image,
                mask: None,
                strength: req.strength,
            };
            validate_job(req.generation, Some(pictures), model, defaults, limits)
        }
        JobRequest::ImageInpaint(req) => {
            let pictures = Pictures {
                image_field: "init_image",
                image: req.init_image,
                mask: Some(req.mask_image),
                strength: req.strength,
            };
            validate_job(req.generation, Some(pictures), model, defaults, limits)
        }
    }
}

/// The still-encoded pictures of an image-to-image or inpainting request.
struct Pictures {
    /// The request's name for the input picture.
    image_field: &'static str,
    image: String,
    mask: Option<String>,
    strength: Option<f64>,
}

fn validate_job(
    req: GenerationFields,
    pictures: Option<Pictures>,
    model: &ModelProfile,
    defaults: &Defaults,
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
    let steps = req.steps.map_or(defaults.steps, widen);
    if !(MIN_STEPS as usize..=MAX_STEPS as usize).contains(&steps) {
        return Err(ApiError::invalid(
            "steps",
            format!("must be between {MIN_STEPS} and {MAX_STEPS}, got {steps}"),
        ));
    }
    let guidance_scale = req.guidance_scale.unwrap_or(defaults.guidance_scale);
    if !(MIN_GUIDANCE_SCALE..=MAX_GUIDANCE_SCALE).contains(&guidance_scale) {
        return Err(ApiError::invalid(
            "guidance_scale",
            format!(
                "must be between {MIN_GUIDANCE_SCALE} and {MAX_GUIDANCE_SCALE}, got {guidance_scale}"
            ),
        ));
    }
    let image_field = pictures.as_ref().map_or("init_image", |p| p.image_field);
    let in_field = |e: ParamError| ApiError::invalid(field_of(e.param, image_field), e.message);
    let image = pictures.map(|p| decode_pictures(p, limits)).transpose()?;
    let (width, height) = match &image {
        Some(input) => picture_size(input, image_field, req.width, req.height, limits)?,
        None => (
            check_size("width", req.width.map_or(defaults.width, widen), limits)?,
            check_size("height", req.height.map_or(defaults.height, widen), limits)?,
        ),
    };
    let scheduler = req
        .scheduler
        .map_or(defaults.scheduler, scheduler_from_wire);
    let generation = GenerateParams {
        prompt: req.prompt,
        negative_prompt: req.negative_prompt,
        steps,
        guidance_scale,
        width,
        height,
        seed: req.seed.unwrap_or_else(random_seed),
        scheduler: Some(scheduler),
        image,
    };
    generation.check(model).map_err(in_field)?;
    let narrow = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Ok(ValidJob {
        params: JobParams {
            prompt: generation.prompt.clone(),
            negative_prompt: generation.negative_prompt.clone(),
            steps: narrow(steps),
            guidance_scale,
            width: narrow(width),
            height: narrow(height),
            seed: generation.seed,
            scheduler: scheduler_to_wire(scheduler),
            strength: generation.image.as_ref().map(|input| input.strength),
        },
        generation,
        preview: req.preview.unwrap_or(false),
        image_field,
    })
}

fn widen(n: u32) -> usize {
    n as usize
}

/// Decodes the base64 pictures, each error naming its field; the strength
/// defaults to diffusers' for the operation.
fn decode_pictures(pictures: Pictures, limits: &Limits) -> Result<ImageInput, ApiError> {
    let max_pixels = usize::try_from(limits.max_input_pixels).unwrap_or(usize::MAX);
    let decode = |field: &'static str, text: &str| {
        let bytes = decode_base64(text).map_err(|message| ApiError::invalid(field, message))?;
        DecodedImage::decode(&bytes, max_pixels)
            .map_err(|e| ApiError::invalid(field, e.to_string()))
    };
    let mask = pictures
        .mask
        .as_deref()
        .map(|mask| decode("mask_image", mask))
        .transpose()?;
    Ok(ImageInput {
        image: decode(pictures.image_field, &pictures.image)?,
        strength: pictures
            .strength
            .unwrap_or(ImageInput::default_strength(mask.is_some())),
        mask,
    })
}

/// The output size of an image job: the given width and height, else the
/// picture's size rounded down to the size multiple (an error naming the
/// picture's field when that falls outside the limits).
fn picture_size(
    input: &ImageInput,
    field: &'static str,
    width: Option<u32>,
    height: Option<u32>,
    limits: &Limits,
) -> Result<(usize, usize), ApiError> {
    let (default_width, default_height) = input
        .default_size(limits.size_multiple as usize)
        .map_err(|e| ApiError::invalid(field, e.message))?;
    let derived = |given: Option<u32>, name: &'static str, value: usize| match given {
        Some(value) => check_size(name, widen(value), limits),
        None => check_size(name, value, limits).map_err(|_| {
            ApiError::invalid(
                field,
                format!(
                    "is {}x{}; without {name} the output takes its {name} rounded down to {} \
                     ({value}), which must be between {} and {}: give width and height",
                    input.image.width(),
                    input.image.height(),
                    limits.size_multiple,
                    limits.min_size,
                    limits.max_size
                ),
            )
        }),
    };
    Ok((
        derived(width, "width", default_width)?,
        derived(height, "height", default_height)?,
    ))
}

/// Standard base64, optionally behind a `data:image/...;base64,` prefix.
fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    let payload = match text.strip_prefix("data:") {
        Some(rest) => rest
            .split_once(";base64,")
            .map(|(_, payload)| payload)
            .ok_or("a data URL must be base64 (`data:image/png;base64,...`)")?,
        None => text,
    };
    if payload.is_empty() {
        return Err("must not be empty".into());
    }
    base64::engine::general_purpose::STANDARD
        .decode(payload)
        .map_err(|e| format!("is not valid base64: {e}"))
}

fn check_size(field: &'static str, value: usize, limits: &Limits) -> Result<usize, ApiError> {
    let multiple = limits.size_multiple as usize;
    if !value.is_multiple_of(multiple) {
        return Err(ApiError::invalid(
            field,
            format!("must be a multiple of {multiple}, got {value}"),
        ));
    }
    if !(limits.min_size as usize..=limits.max_size as usize).contains(&value) {
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

#[cfg(test)]
mod tests {
    use sd_contract::{
        ErrorCode, ImageGenerationRequest, ImageInpaintRequest, ImageTransformRequest, LoraConfig,
        SchedulerKind,
    };

    use super::*;

    fn defaults() -> Defaults {
        Defaults {
            width: 512,
            height: 512,
            steps: 25,
            guidance_scale: 7.5,
            scheduler: sd_core::schedulers::SchedulerKind::Pndm,
        }
    }

    fn model() -> ModelProfile {
        ModelProfile {
            family: sd_core::model::ModelFamily::Sd1,
            inpainting: false,
            native_size: (512, 512),
            vae_scale_factor: 8,
            scheduler: sd_core::schedulers::SchedulerKind::Pndm,
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
            max_input_pixels: 200 * 200,
        }
    }

    fn generation(prompt: &str) -> GenerationFields {
        GenerationFields {
            prompt: prompt.into(),
            ..Default::default()
        }
    }

    fn text_job(generation: GenerationFields) -> JobRequest {
        JobRequest::ImageGeneration(ImageGenerationRequest { generation })
    }

    fn field_of(req: GenerationFields) -> String {
        let err = validate(text_job(req), &model(), &defaults(), &limits()).unwrap_err();
        let detail = err.detail();
        assert_eq!(detail.code, ErrorCode::InvalidRequest, "{detail:?}");
        detail.field.unwrap()
    }

    #[test]
    fn defaults_fill_missing_values_and_a_seed_is_chosen() {
        let job = validate(
            text_job(generation("a cat")),
            &model(),
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
        let req = GenerationFields {
            steps: Some(3),
            guidance_scale: Some(0.0),
            width: Some(64),
            height: Some(96),
            seed: Some(42),
            scheduler: Some(SchedulerKind::EulerA),
            loras: Some(vec![]),
            ..generation("a cat")
        };
        let job = validate(text_job(req), &model(), &defaults(), &limits()).unwrap();
        let p = job.params();
        assert_eq!((p.width, p.height, p.steps, p.seed), (64, 96, 3, 42));
        assert_eq!(p.scheduler, SchedulerKind::EulerA);
    }

    #[test]
    fn each_bad_value_names_its_field() {
        assert_eq!(field_of(generation("  ")), "prompt");
        for steps in [0, 151] {
            let req = GenerationFields {
                steps: Some(steps),
                ..generation("x")
            };
            assert_eq!(field_of(req), "steps");
        }
        for g in [-0.5, 30.5, f64::NAN] {
            let req = GenerationFields {
                guidance_scale: Some(g),
                ..generation("x")
            };
            assert_eq!(field_of(req), "guidance_scale");
        }
        for w in [100, 56, 2048] {
            let req = GenerationFields {
                width: Some(w),
                ..generation("x")
            };
            assert_eq!(field_of(req), "width");
        }
        let req = GenerationFields {
            height: Some(513),
            ..generation("x")
        };
        assert_eq!(field_of(req), "height");
        let req = GenerationFields {
            loras: Some(vec![LoraConfig {
                path: "a.safetensors".into(),
                strength: None,
            }]),
            ..generation("x")
        };
        assert_eq!(field_of(req), "loras");
    }

    fn png_base64(width: usize, height: usize) -> String {
        let rgb: Vec<u8> = (0..width * height * 3)
            .map(|i| (i * 7 % 256) as u8)
            .collect();
        let png = sd_core::image::encode_png(&rgb, width, height, None).unwrap();
        base64::engine::general_purpose::STANDARD.encode(png)
    }

    fn transform(strength: Option<f64>) -> ImageTransformRequest {
        ImageTransformRequest {
            generation: generation("x"),
            input_image: png_base64(140, 106),
            strength,
        }
    }

    fn inpaint(mask_width: usize) -> ImageInpaintRequest {
        ImageInpaintRequest {
            generation: generation("x"),
            init_image: png_base64(140, 106),
            mask_image: png_base64(mask_width, 106),
            strength: None,
        }
    }

    fn job_field(req: JobRequest) -> String {
        let err = validate(req, &model(), &defaults(), &limits()).unwrap_err();
        let detail = err.detail();
        assert_eq!(detail.code, ErrorCode::InvalidRequest, "{detail:?}");
        detail.field.unwrap()
    }

    #[test]
    fn image_jobs_take_the_picture_size_and_default_strengths() {
        let job = validate(
            JobRequest::ImageTransform(transform(None)),
            &model(),
            &defaults(),
            &limits(),
        )
        .unwrap();
        let p = job.params();
        assert_eq!((p.width, p.height, p.strength), (136, 104, Some(0.8)));
        let input = job.generation().image.as_ref().unwrap();
        assert_eq!((input.image.width(), input.mask.is_none()), (140, true));

        let data_url = format!("data:image/png;base64,{}", png_base64(140, 106));
        let req = ImageInpaintRequest {
            generation: GenerationFields {
                width: Some(96),
                ..generation("x")
            },
            init_image: data_url,
            ..inpaint(140)
        };
        let job = validate(
            JobRequest::ImageInpaint(req),
            &model(),
            &defaults(),
            &limits(),
        )
        .unwrap();
        let p = job.params();
        assert_eq!((p.width, p.height, p.strength), (96, 104, Some(1.0)));
        assert!(job.generation().image.as_ref().unwrap().mask.is_some());
    }

    #[test]
    fn each_bad_picture_names_its_field() {
        let transform_with = |input_image: String| {
            JobRequest::ImageTransform(ImageTransformRequest {
                input_image,
                ..transform(None)
            })
        };
        for bad in ["", "not base64!", "AAAA", "data:image/png,AAAA"] {
            assert_eq!(
                job_field(transform_with(bad.into())),
                "input_image",
                "{bad}"
            );
        }
        assert_eq!(
            job_field(transform_with(png_base64(201, 200))),
            "input_image"
        );
        assert_eq!(job_field(transform_with(png_base64(7, 50))), "input_image");
        for strength in [-0.1, 1.5, f64::NAN, 0.01] {
            let req = JobRequest::ImageTransform(transform(Some(strength)));
            assert_eq!(job_field(req), "strength", "{strength}");
        }
        let req = ImageTransformRequest {
            generation: GenerationFields {
                width: Some(60),
                ..generation("x")
            },
            ..transform(None)
        };
        assert_eq!(job_field(JobRequest::ImageTransform(req)), "width");

        assert_eq!(
            job_field(JobRequest::ImageInpaint(inpaint(128))),
            "mask_image"
        );
        let req = ImageInpaintRequest {
            mask_image: "AAAA".into(),
            ..inpaint(140)
        };
        assert_eq!(job_field(JobRequest::ImageInpaint(req)), "mask_image");
        let req = ImageInpaintRequest {
            init_image: "AAAA".into(),
            ..inpaint(140)
        };
        assert_eq!(job_field(JobRequest::ImageInpaint(req)), "init_image");
        let req = ImageInpaintRequest {
            strength: Some(2.0),
            ..inpaint(140)
        };
        assert_eq!(job_field(JobRequest::ImageInpaint(req)), "strength");
    }
}
