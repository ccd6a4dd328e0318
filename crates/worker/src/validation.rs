//! Turning a wire request into a [`ValidJob`]: defaults filled in, every
//! bound checked, the seed chosen, and the pictures of image-to-image and
//! inpainting decoded and checked. The worker's own limits are checked here;
//! what the model needs is checked by sd-core's [`GenerateParams::check`]
//! against the loaded model's profile, its parameters named as this request's
//! fields.
//!
//! Only a `ValidJob` reaches the queue, so nothing past this module has to
//! re-check a request. It keeps its pictures encoded while it waits
//! ([`EncodedPictures`]); [`ValidJob::into_runnable`] decodes them when the job
//! starts, into the [`RunnableJob`] the engine runs. Decoding pictures is CPU
//! work: callers on the async runtime run [`validate`] on the blocking pool.

use std::path::{Path, PathBuf};

use sd_contract::limits::{
    MAX_CLIP_SKIP, MAX_GUIDANCE_SCALE, MAX_LORAS, MAX_LORA_STRENGTH, MAX_NUM_IMAGES,
    MAX_PROMPT_CHARS, MAX_STEPS, MIN_GUIDANCE_SCALE, MIN_NUM_IMAGES, MIN_STEPS,
};
use sd_contract::{GenerationFields, JobParams, JobRequest, Limits, LoraConfig};
use sd_core::model::{ModelFamily, ModelProfile};
use sd_core::pipeline::{random_seed, Defaults, GenerateParams, ImageInput, VaeDecoder};
use sd_core::prompt::PromptSyntax;
use sd_core::{Param, ParamError};

use crate::convert::{
    field_of, scheduler_from_wire, scheduler_to_wire, syntax_from_wire, syntax_to_wire,
};
use crate::error::ApiError;
use crate::loras::LoraDir;
use crate::pictures::{EncodedPictures, PictureError};

/// A request that passed validation, ready to queue. Its pictures, if it has
/// any, stay encoded until it starts: a queued job holds the bytes the client
/// sent, not their pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidJob {
    /// The job as the engine runs it, its generation without the pictures.
    job: RunnableJob,
    /// The pictures, checked and encoded.
    pictures: Option<EncodedPictures>,
}

impl ValidJob {
    /// The parameters the job runs with, as its status reports them.
    pub fn params(&self) -> &JobParams {
        &self.job.params
    }

    /// How many bytes its encoded pictures take (0 without pictures).
    pub fn pictures_bytes(&self) -> usize {
        self.pictures
            .as_ref()
            .map_or(0, EncodedPictures::encoded_bytes)
    }

    /// Decodes its pictures into the job the engine runs. They decoded at
    /// validation, and the same bytes decode to the same pixels, so this is
    /// not expected to fail; if it does, the error names the picture's field.
    pub fn into_runnable(self) -> Result<RunnableJob, PictureError> {
        let mut job = self.job;
        job.generation.image = self
            .pictures
            .as_ref()
            .map(EncodedPictures::decode)
            .transpose()?;
        Ok(job)
    }
}

/// A validated job with its pictures decoded: what the engine runs.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnableJob {
    params: JobParams,
    generation: GenerateParams,
    preview: bool,
    /// The operation's name for its input picture.
    image_field: &'static str,
    /// The LoRAs to apply, in the request's order.
    loras: Vec<JobLora>,
}

/// A LoRA of a job, its file found inside the LoRA directory.
#[derive(Debug, Clone, PartialEq)]
pub struct JobLora {
    /// The name the request gave.
    pub name: String,
    /// The file, every symlink resolved.
    pub path: PathBuf,
    /// Its strength.
    pub strength: f32,
}

impl RunnableJob {
    /// The parameters the job runs with, as its status reports them.
    pub fn params(&self) -> &JobParams {
        &self.params
    }

    /// The same parameters as the pipeline takes them, pictures decoded, with
    /// the seed of the job's first image.
    pub fn generation(&self) -> &GenerateParams {
        &self.generation
    }

    /// How many images the job makes.
    pub fn num_images(&self) -> u32 {
        self.params.num_images
    }

    /// The seed of image `index` (from 0) of the job: the job's seed plus
    /// `index`, wrapping, as AUTOMATIC1111 numbers a batch (and as the
    /// pipeline's [`sd_core::pipeline::StableDiffusion::generate_batch`] seeds its images).
    pub fn seed_of(&self, index: u32) -> u64 {
        self.generation.seed.wrapping_add(u64::from(index))
    }

    /// The LoRAs to apply.
    pub fn loras(&self) -> &[JobLora] {
        &self.loras
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

/// Validates a request against the loaded model, the worker's defaults, its
/// limits and its LoRA directory.
pub fn validate(
    request: JobRequest,
    model: &ModelProfile,
    defaults: &Defaults,
    limits: &Limits,
    lora_dir: Option<&LoraDir>,
) -> Result<ValidJob, ApiError> {
    let context = Context {
        model,
        defaults,
        limits,
        lora_dir,
    };
    match request {
        JobRequest::ImageGeneration(req) => validate_job(req.generation, None, &context),
        JobRequest::ImageTransform(req) => {
            let pictures = Pictures {
                image_field: "input_image",
                image: req.input_image,
                mask: None,
                strength: req.strength,
            };
            validate_job(req.generation, Some(pictures), &context)
        }
        JobRequest::ImageInpaint(req) => {
            let pictures = Pictures {
                image_field: "init_image",
                image: req.init_image,
                mask: Some(req.mask_image),
                strength: req.strength,
            };
            validate_job(req.generation, Some(pictures), &context)
        }
    }
}

/// The base64 pictures of an image-to-image or inpainting request.
struct Pictures {
    /// The request's name for the input picture.
    image_field: &'static str,
    image: String,
    mask: Option<String>,
    strength: Option<f64>,
}

/// What a request is checked against.
struct Context<'a> {
    model: &'a ModelProfile,
    defaults: &'a Defaults,
    limits: &'a Limits,
    lora_dir: Option<&'a LoraDir>,
}

fn validate_job(
    mut req: GenerationFields,
    pictures: Option<Pictures>,
    context: &Context<'_>,
) -> Result<ValidJob, ApiError> {
    let (model, defaults, limits) = (context.model, context.defaults, context.limits);
    check_prompt_length("prompt", &req.prompt)?;
    let syntax = req
        .prompt_syntax
        .map_or(defaults.prompt_syntax, syntax_from_wire);
    let mut tagged = Vec::new();
    if syntax == PromptSyntax::A1111 {
        let (prompt, tags) =
            take_lora_tags(&req.prompt).map_err(|m| ApiError::invalid("prompt", m))?;
        req.prompt = prompt;
        tagged = tags;
    }
    if let Some(negative) = &req.negative_prompt {
        check_prompt_length("negative_prompt", negative)?;
    }
    if req.prompt.trim().is_empty() {
        return Err(ApiError::invalid("prompt", "must not be empty"));
    }
    let mut loras = check_loras(
        req.loras.as_deref().unwrap_or_default(),
        context.lora_dir,
        model,
    )?;
    if !tagged.is_empty() {
        loras.extend(check_loras(&tagged, context.lora_dir, model).map_err(|e| {
            ApiError::invalid("prompt", format!("<lora:…> tag: {}", e.detail().message))
        })?);
        if loras.len() > MAX_LORAS {
            return Err(ApiError::invalid(
                "prompt",
                format!("loras and <lora:…> tags must name at most {MAX_LORAS} adapters together"),
            ));
        }
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
    let num_images = req.num_images.unwrap_or(MIN_NUM_IMAGES);
    if !(MIN_NUM_IMAGES..=MAX_NUM_IMAGES).contains(&num_images) {
        return Err(ApiError::invalid(
            "num_images",
            format!("must be between {MIN_NUM_IMAGES} and {MAX_NUM_IMAGES}, got {num_images}"),
        ));
    }
    let clip_skip = req.clip_skip.unwrap_or(0);
    if clip_skip > MAX_CLIP_SKIP {
        return Err(ApiError::invalid(
            "clip_skip",
            format!("must be between 0 and {MAX_CLIP_SKIP}, got {clip_skip}"),
        ));
    }
    let image_field = pictures.as_ref().map_or("init_image", |p| p.image_field);
    let in_field = |e: ParamError| ApiError::invalid(field_of(e.param, image_field), e.message);
    let max_pixels = usize::try_from(limits.max_input_pixels).unwrap_or(usize::MAX);
    let (pictures, image) = pictures
        .map(|p| {
            let mask = p.mask.as_deref();
            EncodedPictures::from_base64(p.image_field, &p.image, mask, p.strength, max_pixels)
        })
        .transpose()?
        .unzip();
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
        prompt_syntax: syntax,
        clip_skip: clip_skip as usize,
        steps,
        guidance_scale,
        width,
        height,
        seed: req.seed.unwrap_or_else(random_seed),
        scheduler: Some(scheduler),
        image,
        decoder: match req.fast_decode {
            Some(true) => VaeDecoder::Tiny,
            Some(false) => VaeDecoder::Full,
            None => defaults.decoder,
        },
    };
    generation.check(model).map_err(in_field)?;
    let narrow = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let params = JobParams {
        prompt: generation.prompt.clone(),
        negative_prompt: generation.negative_prompt.clone(),
        prompt_syntax: syntax_to_wire(generation.prompt_syntax),
        clip_skip,
        steps: narrow(steps),
        guidance_scale,
        width: narrow(width),
        height: narrow(height),
        seed: generation.seed,
        num_images,
        scheduler: scheduler_to_wire(scheduler),
        strength: generation.image.as_ref().map(|input| input.strength),
    };
    // The pixels served to check the pictures and to size the output; the
    // queued job keeps the encoded bytes and decodes them again at its start.
    let generation = GenerateParams {
        image: None,
        ..generation
    };
    Ok(ValidJob {
        job: RunnableJob {
            params,
            generation,
            preview: req.preview.unwrap_or(false),
            image_field,
            loras,
        },
        pictures,
    })
}

/// The request's LoRAs found in the LoRA directory, their strengths checked.
/// Each field at fault is named: `loras[1].path` for a name that is not a
/// file inside the directory (nothing outside it is opened), for a file
/// whose header holds no LoRA, or for one that adapts SDXL's second text
/// encoder on another model.
fn check_loras(
    loras: &[LoraConfig],
    dir: Option<&LoraDir>,
    model: &ModelProfile,
) -> Result<Vec<JobLora>, ApiError> {
    if loras.is_empty() {
        return Ok(Vec::new());
    }
    let Some(dir) = dir else {
        return Err(ApiError::invalid(
            "loras",
            "this worker has no LoRA directory (start it with --lora-dir); send an empty list or null",
        ));
    };
    if loras.len() > MAX_LORAS {
        return Err(ApiError::invalid(
            "loras",
            format!(
                "must hold at most {MAX_LORAS} adapters, got {}",
                loras.len()
            ),
        ));
    }
    loras
        .iter()
        .enumerate()
        .map(|(i, lora)| {
            let strength = lora.strength.unwrap_or(1.0);
            if !(-MAX_LORA_STRENGTH..=MAX_LORA_STRENGTH).contains(&strength) {
                return Err(ApiError::invalid(
                    format!("loras[{i}].strength"),
                    format!(
                        "must be between {} and {MAX_LORA_STRENGTH}, got {strength}",
                        -MAX_LORA_STRENGTH
                    ),
                ));
            }
            let field = format!("loras[{i}].path");
            let path = dir
                .resolve(&lora.path)
                .map_err(|message| ApiError::invalid(field.clone(), message))?;
            check_lora_file(&path, &lora.path, model)
                .map_err(|message| ApiError::invalid(field, message))?;
            Ok(JobLora {
                name: lora.path.clone(),
                path,
                strength,
            })
        })
        .collect()
}

/// Reads the header of the LoRA file at `path` (named `name` by the job):
/// it must be a LoRA, and one whose targets the model has.
fn check_lora_file(path: &Path, name: &str, model: &ModelProfile) -> Result<(), String> {
    let (_, targets) = sd_core::lora::inspect(path).map_err(|e| match e {
        sd_core::Error::Lora { message, .. } => format!("LoRA {name:?}: {message}"),
        other => format!(
            "LoRA {name:?}: {}",
            other.to_string().replace(&path.display().to_string(), name)
        ),
    })?;
    if targets.contains(&sd_core::model::Component::TextEncoder2)
        && model.family != ModelFamily::Sdxl
    {
        return Err(format!(
            "LoRA {name:?} adapts text_encoder_2, which only SDXL models have (this model is {})",
            model.family
        ));
    }
    Ok(())
}

/// AUTOMATIC1111's LoRA tags, `<lora:NAME>` or `<lora:NAME:STRENGTH>` (a
/// third field, A1111's separate UNet multiplier, is not taken): the prompt
/// without them, and the LoRAs they name, in order.
fn take_lora_tags(prompt: &str) -> Result<(String, Vec<LoraConfig>), String> {
    const OPEN: &str = "<lora:";
    let mut rest = prompt;
    let mut text = String::with_capacity(prompt.len());
    let mut loras = Vec::new();
    while let Some(start) = rest.find(OPEN) {
        text.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let end = after
            .find('>')
            .ok_or_else(|| "a <lora:…> tag is not closed with `>`".to_string())?;
        let mut fields = after[..end].split(':');
        let path = fields.next().unwrap_or_default().trim().to_string();
        let strength =
            match fields.next() {
                Some(value) => Some(value.trim().parse::<f32>().map_err(|_| {
                    format!("<lora:{}> takes a number as its strength", &after[..end])
                })?),
                None => None,
            };
        if fields.next().is_some() {
            return Err(format!(
                "<lora:{}>: separate text-encoder and UNet strengths are not supported",
                &after[..end]
            ));
        }
        loras.push(LoraConfig { path, strength });
        rest = &after[end + 1..];
    }
    text.push_str(rest);
    Ok((text, loras))
}

/// Refuses a text over [`MAX_PROMPT_CHARS`] characters before the tokenizer
/// spends its time on it.
fn check_prompt_length(field: &'static str, text: &str) -> Result<(), ApiError> {
    let chars = text.chars().count();
    if chars > MAX_PROMPT_CHARS {
        return Err(ApiError::invalid(
            field,
            format!("must be at most {MAX_PROMPT_CHARS} characters, got {chars}"),
        ));
    }
    Ok(())
}

fn widen(n: u32) -> usize {
    n as usize
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
