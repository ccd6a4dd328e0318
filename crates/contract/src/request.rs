//! The body of `POST /v1/jobs`: an rbee operation, tagged by `"operation"`.
//!
//! The field names follow rbee's operations contract so a hive or queen can
//! forward its `Operation` unchanged. rbee serialises unset optional fields as
//! `null`, so every optional field here accepts `null` as well as absence.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::SchedulerKind;

/// One job request, tagged by `operation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "operation", rename_all = "snake_case")]
pub enum JobRequest {
    /// Text to image.
    ImageGeneration(ImageGenerationRequest),
    /// Image to image: the input picture noised to `strength` and denoised toward the prompt.
    ImageTransform(ImageTransformRequest),
    /// Inpainting: the masked part of the picture repainted from the prompt.
    ImageInpaint(ImageInpaintRequest),
}

impl JobRequest {
    /// Every operation name, as the `operation` tag spells it.
    pub const OPERATIONS: [&'static str; 3] =
        ["image_generation", "image_transform", "image_inpaint"];

    /// The top-level fields a body of `operation` may have, the tag and the
    /// image fields' aliases included; `None` for an unknown operation.
    /// Anything else in a body is an unknown field.
    pub fn fields(operation: &str) -> Option<&'static [&'static str]> {
        const SHARED: [&str; 18] = [
            "operation",
            "hive_id",
            "model",
            "prompt",
            "negative_prompt",
            "prompt_syntax",
            "clip_skip",
            "steps",
            "guidance_scale",
            "seed",
            "width",
            "height",
            "loras",
            "worker_id",
            "scheduler",
            "preview",
            "num_images",
            "fast_decode",
        ];
        const TRANSFORM: [&str; 21] = concat(SHARED, ["strength", "input_image", "init_image"]);
        const INPAINT: [&str; 22] = concat(
            SHARED,
            ["strength", "input_image", "init_image", "mask_image"],
        );
        match operation {
            "image_generation" => Some(&SHARED),
            "image_transform" => Some(&TRANSFORM),
            "image_inpaint" => Some(&INPAINT),
            _ => None,
        }
    }

    /// The fields every operation shares.
    pub fn generation(&self) -> &GenerationFields {
        match self {
            JobRequest::ImageGeneration(r) => &r.generation,
            JobRequest::ImageTransform(r) => &r.generation,
            JobRequest::ImageInpaint(r) => &r.generation,
        }
    }

    /// The fields every operation shares, to change.
    pub fn generation_mut(&mut self) -> &mut GenerationFields {
        match self {
            JobRequest::ImageGeneration(r) => &mut r.generation,
            JobRequest::ImageTransform(r) => &mut r.generation,
            JobRequest::ImageInpaint(r) => &mut r.generation,
        }
    }

    /// The `operation` tag of this request.
    pub fn operation(&self) -> &'static str {
        match self {
            JobRequest::ImageGeneration(_) => "image_generation",
            JobRequest::ImageTransform(_) => "image_transform",
            JobRequest::ImageInpaint(_) => "image_inpaint",
        }
    }
}

/// How a job's prompts are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PromptSyntax {
    /// AUTOMATIC1111's: `(word)` ×1.1, `[word]` ÷1.1, `(word:1.3)`, nesting
    /// multiplies, `\(` escapes, `BREAK` starts a new 75-token chunk, and
    /// prompts longer than 75 tokens are encoded chunk by chunk.
    A1111,
    /// diffusers': the text as written, cut at 77 tokens.
    Plain,
}

/// `shared` followed by `extra`, at compile time (`M` must be `N + K`).
const fn concat<const N: usize, const K: usize, const M: usize>(
    shared: [&'static str; N],
    extra: [&'static str; K],
) -> [&'static str; M] {
    let mut all = [""; M];
    let mut i = 0;
    while i < M {
        all[i] = if i < N { shared[i] } else { extra[i - N] };
        i += 1;
    }
    all
}

/// A LoRA adapter to apply (rbee's `LoRAConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoraConfig {
    /// The adapter's name in the worker's `--lora-dir` (as `GET /v1/loras`
    /// lists it), with or without `.safetensors`; a path inside the directory
    /// may have folders, never `..` or a leading `/`.
    pub path: String,
    /// Its strength, diffusers' `lora_scale` (1: as trained; negative:
    /// pushes away from it); 1.0 when absent.
    #[serde(default)]
    #[schema(minimum = -4, maximum = 4)]
    pub strength: Option<f32>,
}

impl LoraConfig {
    /// The fields an adapter's object may have.
    pub const FIELDS: [&'static str; 2] = ["path", "strength"];
}

/// The fields every operation shares, flattened into each operation's body.
/// Absent or `null` values take the worker's defaults (its preset's, or its
/// model family's), which `GET /v1/info` lists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GenerationFields {
    /// The hive that routed the job (informational).
    #[serde(default)]
    pub hive_id: Option<String>,
    /// The model the caller expects (informational: a worker serves one model).
    #[serde(default)]
    pub model: Option<String>,
    /// What to draw (in the masked area, for inpainting): up to 4096
    /// characters, not all of them white space. CLIP reads the first 75
    /// tokens; the rest are cut off.
    ///
    /// The pattern is one character outside Unicode `White_Space`.
    #[schema(
        min_length = 1,
        max_length = 4096,
        pattern = r"[^\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub prompt: String,
    /// What to steer away from: up to 4096 characters.
    #[serde(default)]
    #[schema(max_length = 4096)]
    pub negative_prompt: Option<String>,
    /// How `prompt` and `negative_prompt` are read; the worker's default
    /// (`--prompt-syntax`, `a1111` unless set) when absent.
    #[serde(default)]
    pub prompt_syntax: Option<PromptSyntax>,
    /// How many of the text encoders' last layers both prompts skip, 0 to 11
    /// (0 when absent or `null`): diffusers' `clip_skip`, AUTOMATIC1111's
    /// "Clip skip" minus one.
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(minimum = 0, maximum = 11)]
    pub clip_skip: Option<u32>,
    /// Denoising steps, 1 to 150; with the `lcm` scheduler at most the model's
    /// `original_inference_steps` (50 unless its scheduler config says otherwise).
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(minimum = 1, maximum = 150)]
    pub steps: Option<u32>,
    /// Classifier-free guidance scale, 0 to 30; 1 or less runs the conditional pass only.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 30)]
    pub guidance_scale: Option<f64>,
    /// Seed of the initial noise (of the first image, with `num_images`);
    /// drawn at random when absent and always reported back.
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(maximum = 18446744073709551615_u64)]
    pub seed: Option<u64>,
    /// Image width in pixels, a multiple of 8 from 64 up to the worker's
    /// `max_size` (`GET /v1/info`). For image-to-image and inpainting, the
    /// input's width rounded down to 8 when absent; the input (and mask) are
    /// resized when the size differs.
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(minimum = 64, maximum = 2048, multiple_of = 8)]
    pub width: Option<u32>,
    /// Image height in pixels, a multiple of 8 from 64 up to the worker's
    /// `max_size`. For image-to-image and inpainting, the input's height
    /// rounded down to 8 when absent.
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(minimum = 64, maximum = 2048, multiple_of = 8)]
    pub height: Option<u32>,
    /// LoRA adapters to apply, at most 8, each at its strength; they need a
    /// worker started with `--lora-dir`.
    #[serde(default)]
    #[schema(max_items = 8)]
    pub loras: Option<Vec<LoraConfig>>,
    /// The worker the job was routed to (informational).
    #[serde(default)]
    pub worker_id: Option<String>,
    /// The denoising scheduler; the worker's default when absent.
    #[serde(default)]
    pub scheduler: Option<SchedulerKind>,
    /// Whether `progress` events carry a live preview of the image (absent or `null`: no).
    #[serde(default)]
    pub preview: Option<bool>,
    /// How many images to make, 1 to 8 (1 when absent or `null`), with the
    /// seeds `seed`, `seed + 1`, … (wrapping past the largest seed), as
    /// AUTOMATIC1111 numbers a batch. A job of one image streams and reports
    /// exactly as before; one of several sends an `image` event as each is
    /// finished, and its `complete` event and status list them all in
    /// `images` (see `ImageResult`).
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(minimum = 1, maximum = 8)]
    pub num_images: Option<u32>,
    /// Decode the image with the worker's tiny autoencoder (TAESD, loaded
    /// with `--tiny-vae`): several times faster, slightly less detailed.
    /// `false` uses the model's own VAE; absent or `null`, the worker's
    /// `--vae-decoder`. `true` on a worker without a tiny autoencoder is a 400
    /// naming this field.
    #[serde(default)]
    pub fast_decode: Option<bool>,
}

/// Text-to-image parameters (rbee's `ImageGenerationRequest`): the shared fields only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageGenerationRequest {
    /// The fields every operation shares.
    #[serde(flatten)]
    pub generation: GenerationFields,
}

/// Image-to-image parameters (rbee's `ImageTransformRequest`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageTransformRequest {
    /// The fields every operation shares.
    #[serde(flatten)]
    pub generation: GenerationFields,
    /// How far to move away from the input image, above 0 up to 1 (0.8 when
    /// absent): the share of the denoising steps that run, at least one.
    #[serde(default)]
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub strength: Option<f64>,
    /// The input image, a base64-encoded PNG or JPEG (`init_image` is accepted too).
    #[serde(alias = "init_image")]
    #[schema(min_length = 1)]
    pub input_image: String,
}

/// Inpainting parameters (rbee's `ImageInpaintRequest`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageInpaintRequest {
    /// The fields every operation shares.
    #[serde(flatten)]
    pub generation: GenerationFields,
    /// The input image, a base64-encoded PNG or JPEG (`input_image` is accepted too).
    #[serde(alias = "input_image")]
    #[schema(min_length = 1)]
    pub init_image: String,
    /// The mask, a base64-encoded PNG or JPEG of the input's size (white =
    /// repaint, black = keep; grey levels are thresholded at 50%).
    #[schema(min_length = 1)]
    pub mask_image: String,
    /// How far to move away from the input image inside the mask, above 0 up
    /// to 1 (1 when absent: the masked area starts from pure noise).
    #[serde(default)]
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub strength: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rbee_body_with_nulls_parses() {
        let body = r#"{"operation":"image_generation","hive_id":"localhost","model":"sd-1.5",
            "prompt":"a cat","negative_prompt":null,"steps":20,"guidance_scale":7.5,"seed":null,
            "width":512,"height":512,"loras":[],"worker_id":null,"preview":null}"#;
        let JobRequest::ImageGeneration(req) = serde_json::from_str(body).unwrap() else {
            panic!("wrong operation");
        };
        let fields = req.generation;
        assert_eq!(fields.prompt, "a cat");
        assert_eq!(fields.steps, Some(20));
        assert_eq!(fields.seed, None);
        assert_eq!(fields.loras, Some(vec![]));
        assert_eq!(fields.preview, None);
    }

    #[test]
    fn image_fields_accept_either_name() {
        let body = r#"{"operation":"image_transform","prompt":"x","init_image":"AAAA"}"#;
        let JobRequest::ImageTransform(req) = serde_json::from_str(body).unwrap() else {
            panic!("wrong operation");
        };
        assert_eq!(req.input_image, "AAAA");
        let body = r#"{"operation":"image_inpaint","prompt":"x","input_image":"AAAA",
            "mask_image":"BBBB","strength":0.5,"width":64,"height":null}"#;
        let JobRequest::ImageInpaint(req) = serde_json::from_str(body).unwrap() else {
            panic!("wrong operation");
        };
        assert_eq!((req.init_image.as_str(), req.strength), ("AAAA", Some(0.5)));
        assert_eq!(
            (req.generation.width, req.generation.height),
            (Some(64), None)
        );
    }

    #[test]
    fn the_field_lists_are_the_serialized_fields_and_the_aliases() {
        let keys = |request: JobRequest| -> Vec<String> {
            let json = serde_json::to_value(request).unwrap();
            json.as_object().unwrap().keys().cloned().collect()
        };
        let cases = [
            (JobRequest::ImageGeneration(Default::default()), None),
            (
                JobRequest::ImageTransform(Default::default()),
                Some("init_image"),
            ),
            (
                JobRequest::ImageInpaint(Default::default()),
                Some("input_image"),
            ),
        ];
        for (request, alias) in cases {
            let fields = JobRequest::fields(request.operation()).unwrap();
            let mut expected = keys(request);
            expected.extend(alias.map(str::to_string));
            expected.sort();
            let mut listed: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
            listed.sort();
            assert_eq!(listed, expected);
        }
        assert_eq!(JobRequest::fields("image_upscale"), None);
        let lora = serde_json::to_value(LoraConfig {
            path: "x".into(),
            strength: None,
        })
        .unwrap();
        let lora_keys: Vec<&str> = lora
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(lora_keys, LoraConfig::FIELDS);
    }

    #[test]
    fn minimal_bodies_parse_and_round_trip() {
        let bodies = [
            r#"{"operation":"image_generation","prompt":"x","scheduler":"euler_a","preview":true}"#,
            r#"{"operation":"image_transform","prompt":"x","steps":null,"input_image":"AAAA","strength":0.5}"#,
            r#"{"operation":"image_inpaint","prompt":"x","seed":7,"init_image":"AAAA","mask_image":"BBBB"}"#,
        ];
        for body in bodies {
            let req: JobRequest = serde_json::from_str(body).unwrap();
            let json = serde_json::to_value(&req).unwrap();
            assert_eq!(json["operation"], req.operation(), "{json}");
            assert_eq!(json["prompt"], "x", "{json}");
            assert_eq!(serde_json::from_value::<JobRequest>(json).unwrap(), req);
        }
        let JobRequest::ImageGeneration(params) = serde_json::from_str(bodies[0]).unwrap() else {
            panic!("wrong operation");
        };
        assert_eq!(params.generation.preview, Some(true));
    }
}
