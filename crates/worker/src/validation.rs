//! Turning a wire request into a [`ValidJob`]: defaults filled in from the
//! worker's preset or model family, every bound checked, the seed chosen, and
//! the pictures of image-to-image and inpainting decoded.
//!
//! Only a `ValidJob` reaches the queue and the engine, so nothing past this
//! module has to re-check a request.

use base64::Engine as _;
use sd_contract::{
    GenerationDefaults, ImageGenerationRequest, ImageInpaintRequest, ImageTransformRequest,
    JobParams, JobRequest, Limits, LoraConfig, SchedulerKind,
};
use sd_core::image::DecodedImage;
use sd_core::pipeline::{ImageInput, DEFAULT_IMG2IMG_STRENGTH, DEFAULT_INPAINT_STRENGTH};

use crate::error::ApiError;

/// A request that passed validation, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidJob {
    params: JobParams,
    image: Option<ImageInput>,
    preview: bool,
}

impl ValidJob {
    /// The parameters the job runs with.
    pub fn params(&self) -> &JobParams {
        &self.params
    }

    /// The decoded picture (and mask) of an image-to-image or inpainting job.
    pub fn image(&self) -> Option<&ImageInput> {
        self.image.as_ref()
    }

    /// Whether its progress events should carry live previews.
    pub fn wants_preview(&self) -> bool {
        self.preview
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
        JobRequest::ImageGeneration(req) => validate_job(Common::from(req), None, defaults, limits),
        JobRequest::ImageTransform(mut req) => {
            let pictures = Pictures {
                image_field: "input_image",
                image: std::mem::take(&mut req.input_image),
                mask: None,
                strength: req.strength.unwrap_or(DEFAULT_IMG2IMG_STRENGTH),
            };
            validate_job(Common::from(req), Some(pictures), defaults, limits)
        }
        JobRequest::ImageInpaint(mut req) => {
            let pictures = Pictures {
                image_field: "init_image",
                image: std::mem::take(&mut req.init_image),
                mask: Some(std::mem::take(&mut req.mask_image)),
                strength: req.strength.unwrap_or(DEFAULT_INPAINT_STRENGTH),
            };
            validate_job(Common::from(req), Some(pictures), defaults, limits)
        }
    }
}

/// The fields every operation shares.
struct Common {
    prompt: String,
    negative_prompt: Option<String>,
    steps: Option<u32>,
    guidance_scale: Option<f64>,
    seed: Option<u64>,
    width: Option<u32>,
    height: Option<u32>,
    loras: Option<Vec<LoraConfig>>,
    scheduler: Option<SchedulerKind>,
    preview: Option<bool>,
}

macro_rules! common_from {
    ($request:ty) => {
        impl From<$request> for Common {
            fn from(req: $request) -> Self {
                Common {
                    prompt: req.prompt,
                    negative_prompt: req.negative_prompt,
                    steps: req.steps,
                    guidance_scale: req.guidance_scale,
                    seed: req.seed,
                    width: req.width,
                    height: req.height,
                    loras: req.loras,
                    scheduler: req.scheduler,
                    preview: req.preview,
                }
            }
        }
    };
}

common_from!(ImageGenerationRequest);
common_from!(ImageTransformRequest);
common_from!(ImageInpaintRequest);

/// The still-encoded pictures of an image-to-image or inpainting request.
struct Pictures {
    /// The request's name for the input picture.
    image_field: &'static str,
    image: String,
    mask: Option<String>,
    strength: f64,
}

fn validate_job(
    req: Common,
    pictures: Option<Pictures>,
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
    let image = pictures
        .map(|p| decode_pictures(p, steps, limits))
        .transpose()?;
    let (width, height) = match &image {
        Some((input, field)) => picture_size(input, field, req.width, req.height, limits)?,
        None => (
            check_size("width", req.width.unwrap_or(defaults.width), limits)?,
            check_size("height", req.height.unwrap_or(defaults.height), limits)?,
        ),
    };
    let image = image.map(|(input, _)| input);
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
            strength: image.as_ref().map(|input| input.strength),
        },
        image,
        preview: req.preview.unwrap_or(false),
    })
}

/// Decodes the base64 pictures and checks them with the strength: each
/// error names the request's field. Returns the input and its field name.
fn decode_pictures(
    pictures: Pictures,
    steps: u32,
    limits: &Limits,
) -> Result<(ImageInput, &'static str), ApiError> {
    let field = pictures.image_field;
    let max_pixels = usize::try_from(limits.max_input_pixels).unwrap_or(usize::MAX);
    let decode = |field: &'static str, text: &str| {
        let bytes = decode_base64(text).map_err(|message| ApiError::invalid(field, message))?;
        DecodedImage::decode(&bytes, max_pixels)
            .map_err(|e| ApiError::invalid(field, e.to_string()))
    };
    let input = ImageInput {
        image: decode(field, &pictures.image)?,
        mask: pictures
            .mask
            .as_deref()
            .map(|mask| decode("mask_image", mask))
            .transpose()?,
        strength: pictures.strength,
    };
    input.validate().map_err(|e| core_error(e, field))?;
    input
        .steps_run(steps as usize)
        .map_err(|e| core_error(e, field))?;
    Ok((input, field))
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
) -> Result<(u32, u32), ApiError> {
    let (default_width, default_height) = input
        .default_size(limits.size_multiple as usize)
        .map_err(|e| core_error(e, field))?;
    let derived = |given: Option<u32>, name: &'static str, value: usize| match given {
        Some(value) => check_size(name, value, limits),
        None => {
            let value = u32::try_from(value).unwrap_or(u32::MAX);
            check_size(name, value, limits).map_err(|_| {
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
            })
        }
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

/// A core request error as a 400, its `init_image` renamed to the request's
/// name for the input picture.
fn core_error(error: sd_core::Error, image_field: &'static str) -> ApiError {
    match error {
        sd_core::Error::InvalidRequest { field, message } => {
            let field = if field == "init_image" {
                image_field
            } else {
                field
            };
            ApiError::invalid(field, message.replace("init_image", image_field))
        }
        other => ApiError::Internal(other.to_string()),
    }
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
    use sd_contract::{ErrorCode, LoraConfig};

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
            max_input_pixels: 200 * 200,
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

    fn png_base64(width: usize, height: usize) -> String {
        let rgb: Vec<u8> = (0..width * height * 3)
            .map(|i| (i * 7 % 256) as u8)
            .collect();
        let png = sd_core::image::encode_png(&rgb, width, height, None).unwrap();
        base64::engine::general_purpose::STANDARD.encode(png)
    }

    fn transform(strength: Option<f64>) -> ImageTransformRequest {
        ImageTransformRequest {
            prompt: "x".into(),
            input_image: png_base64(140, 106),
            strength,
            ..Default::default()
        }
    }

    fn inpaint(mask_width: usize) -> ImageInpaintRequest {
        ImageInpaintRequest {
            prompt: "x".into(),
            init_image: png_base64(140, 106),
            mask_image: png_base64(mask_width, 106),
            ..Default::default()
        }
    }

    fn job_field(req: JobRequest) -> String {
        let err = validate(req, &defaults(), &limits()).unwrap_err();
        let detail = err.detail();
        assert_eq!(detail.code, ErrorCode::InvalidRequest, "{detail:?}");
        detail.field.unwrap()
    }

    #[test]
    fn image_jobs_take_the_picture_size_and_default_strengths() {
        let job = validate(
            JobRequest::ImageTransform(transform(None)),
            &defaults(),
            &limits(),
        )
        .unwrap();
        let p = job.params();
        assert_eq!((p.width, p.height, p.strength), (136, 104, Some(0.8)));
        let input = job.image().unwrap();
        assert_eq!((input.image.width(), input.mask.is_none()), (140, true));

        let data_url = format!("data:image/png;base64,{}", png_base64(140, 106));
        let req = ImageInpaintRequest {
            init_image: data_url,
            width: Some(96),
            ..inpaint(140)
        };
        let job = validate(JobRequest::ImageInpaint(req), &defaults(), &limits()).unwrap();
        let p = job.params();
        assert_eq!((p.width, p.height, p.strength), (96, 104, Some(1.0)));
        assert!(job.image().unwrap().mask.is_some());
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
            width: Some(60),
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
