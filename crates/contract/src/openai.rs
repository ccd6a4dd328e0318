//! The OpenAI Images API as this worker speaks it: `POST /v1/images/generations`,
//! `POST /v1/images/edits` and `GET /v1/models`, in the shapes OpenAI's
//! clients parse, with sd-worker's generation fields as extensions.
//!
//! Each image is an ordinary job of the job API (its id is in the answer), run
//! with the same validation, queue and limits. Fields OpenAI has and a
//! Stable Diffusion worker has no use for (`quality`, `style`, `user`) are
//! accepted and ignored, as are fields neither side knows.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{PromptSyntax, SchedulerKind};

/// The most images one call may ask for (`n`).
pub const MAX_IMAGES: u32 = 8;

/// How the images come back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OpenAiResponseFormat {
    /// The PNG file, base64-encoded, in `b64_json` (the default, as with OpenAI's `gpt-image-1`).
    #[default]
    B64Json,
    /// The PNG file as a `data:image/png;base64,...` URL in `url`: the worker
    /// keeps no files to link to, and a data URL is what an `<img src>` and
    /// most chat front ends show directly.
    Url,
}

/// The body of `POST /v1/images/generations`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpenAiImageRequest {
    /// What to draw: up to 4096 characters, not all of them white space.
    #[schema(
        min_length = 1,
        max_length = 4096,
        pattern = r"[^\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub prompt: String,
    /// Accepted and ignored: a worker serves one model (`GET /v1/models`).
    #[serde(default)]
    pub model: Option<String>,
    /// How many images, 1 to 8 (1 when absent): one job each, with the seeds
    /// `seed`, `seed + 1`, ….
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(minimum = 1, maximum = 8)]
    pub n: Option<u32>,
    /// `WIDTHxHEIGHT` in pixels (`512x512`), each a multiple of 8 from 64 up
    /// to the worker's `max_size`; `auto` or absent: the worker's default size.
    #[serde(default)]
    #[schema(pattern = "^(auto|[0-9]{1,5}x[0-9]{1,5})$")]
    pub size: Option<String>,
    /// `b64_json` (the default) or `url` (a `data:` URL).
    #[serde(default)]
    pub response_format: Option<OpenAiResponseFormat>,
    /// Accepted and ignored.
    #[serde(default)]
    pub quality: Option<String>,
    /// Accepted and ignored.
    #[serde(default)]
    pub style: Option<String>,
    /// Accepted and ignored.
    #[serde(default)]
    pub user: Option<String>,
    /// Extension: what to steer away from, up to 4096 characters.
    #[serde(default)]
    #[schema(max_length = 4096)]
    pub negative_prompt: Option<String>,
    /// Extension: the seed of the first image, up to 2^64 - 1; random when absent.
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(maximum = 18446744073709551615_u64)]
    pub seed: Option<u64>,
    /// Extension: denoising steps, 1 to 150 (the worker's default when absent).
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(minimum = 1, maximum = 150)]
    pub steps: Option<u32>,
    /// Extension: classifier-free guidance scale, 0 to 30.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 30)]
    pub guidance_scale: Option<f64>,
    /// Extension: the denoising scheduler.
    #[serde(default)]
    pub scheduler: Option<SchedulerKind>,
    /// Extension: how the prompts are read.
    #[serde(default)]
    pub prompt_syntax: Option<PromptSyntax>,
}

/// The body of `POST /v1/images/edits`, sent as `multipart/form-data`.
///
/// With a `mask` the call inpaints (`image_inpaint`): the mask's fully
/// transparent pixels are repainted, the rest kept. Without one it is
/// image-to-image (`image_transform`): the whole picture moves toward the
/// prompt by `strength`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpenAiImageEditForm {
    /// The picture to edit: a PNG file (JPEG is read too). `image[]` is
    /// accepted for it, holding one file.
    #[schema(value_type = String, format = Binary)]
    pub image: Vec<u8>,
    /// A PNG with an alpha channel, whose fully transparent pixels (alpha 0)
    /// mark the area to edit, as OpenAI's masks do; resized to the output size.
    #[serde(default)]
    #[schema(value_type = String, format = Binary)]
    pub mask: Option<Vec<u8>>,
    /// What the edited picture should show: up to 4096 characters, not all of
    /// them white space.
    #[schema(
        min_length = 1,
        max_length = 4096,
        pattern = r"[^\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub prompt: String,
    /// The other text fields (numbers written as text); fields not listed,
    /// such as `quality`, are ignored.
    #[serde(flatten)]
    pub fields: OpenAiEditFields,
}

/// The text fields of `POST /v1/images/edits` besides the prompt. A form
/// has no `null`: the schema leaves a field out rather than null it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpenAiEditFields {
    /// Accepted and ignored: a worker serves one model.
    #[serde(default)]
    #[schema(value_type = String)]
    pub model: Option<String>,
    /// How many images, 1 to 8 (1 when absent).
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(value_type = u32, minimum = 1, maximum = 8)]
    pub n: Option<u32>,
    /// `WIDTHxHEIGHT`, each a multiple of 8 from 64 up to the worker's
    /// `max_size`; `auto` or absent: the picture's size rounded down to 8.
    #[serde(default)]
    #[schema(value_type = String, pattern = "^(auto|[0-9]{1,5}x[0-9]{1,5})$")]
    pub size: Option<String>,
    /// `b64_json` (the default) or `url` (a `data:` URL).
    #[serde(default)]
    #[schema(value_type = OpenAiResponseFormat)]
    pub response_format: Option<OpenAiResponseFormat>,
    /// Accepted and ignored.
    #[serde(default)]
    #[schema(value_type = String)]
    pub user: Option<String>,
    /// Extension: what to steer away from, up to 4096 characters.
    #[serde(default)]
    #[schema(value_type = String, max_length = 4096)]
    pub negative_prompt: Option<String>,
    /// Extension: the seed of the first image, up to 2^64 - 1; random when absent.
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(value_type = u64, maximum = 18446744073709551615_u64)]
    pub seed: Option<u64>,
    /// Extension: denoising steps, 1 to 150.
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(value_type = u32, minimum = 1, maximum = 150)]
    pub steps: Option<u32>,
    /// Extension: classifier-free guidance scale, 0 to 30.
    #[serde(default)]
    #[schema(value_type = f64, minimum = 0, maximum = 30)]
    pub guidance_scale: Option<f64>,
    /// Extension: how far to move away from the picture, above 0 up to 1
    /// (0.8 without a mask, 1 with one, when absent). Without a mask,
    /// `strength x steps` must make at least one step.
    #[serde(default)]
    #[schema(value_type = f64, exclusive_minimum = 0, maximum = 1)]
    pub strength: Option<f64>,
    /// Extension: the denoising scheduler.
    #[serde(default)]
    #[schema(value_type = SchedulerKind)]
    pub scheduler: Option<SchedulerKind>,
    /// Extension: how the prompts are read.
    #[serde(default)]
    #[schema(value_type = PromptSyntax)]
    pub prompt_syntax: Option<PromptSyntax>,
}

impl OpenAiEditFields {
    /// Every field, as the form names it.
    pub const FIELDS: [&'static str; 12] = [
        "model",
        "n",
        "size",
        "response_format",
        "user",
        "negative_prompt",
        "seed",
        "steps",
        "guidance_scale",
        "strength",
        "scheduler",
        "prompt_syntax",
    ];

    /// The text fields whose values are numbers.
    pub const NUMBERS: [&'static str; 5] = ["n", "seed", "steps", "guidance_scale", "strength"];
}

/// The answer to an images call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpenAiImagesResponse {
    /// When the images were made, in seconds since the Unix epoch.
    pub created: u64,
    /// The images, in seed order.
    pub data: Vec<OpenAiImage>,
}

/// One image of an images call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpenAiImage {
    /// The PNG file, base64-encoded, when `response_format` is `b64_json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b64_json: Option<String>,
    /// The PNG file as a `data:image/png;base64,...` URL, when
    /// `response_format` is `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Extension: the seed that made it.
    pub seed: u64,
    /// Extension: its job, which `GET /v1/jobs/{id}` shows for the retention period.
    pub job_id: String,
}

/// The answer to `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpenAiModelList {
    /// Always `list`.
    #[schema(pattern = "^list$")]
    pub object: String,
    /// The one model this worker serves.
    pub data: Vec<OpenAiModel>,
}

/// A model, as OpenAI lists one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpenAiModel {
    /// The model's name: its Hugging Face repo id or folder (`GET /v1/info`'s `model`).
    pub id: String,
    /// Always `model`.
    #[schema(pattern = "^model$")]
    pub object: String,
    /// When the worker started, in seconds since the Unix epoch.
    pub created: u64,
    /// Always `sd-worker`.
    pub owned_by: String,
}

/// The body of every error answer of the OpenAI routes:
/// `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OpenAiErrorBody {
    /// The error.
    pub error: OpenAiError,
}

/// One error, in OpenAI's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OpenAiError {
    /// What went wrong, naming the limit and the value given where there is one.
    pub message: String,
    /// `invalid_request_error` for the client's errors (4xx), `server_error`
    /// for the worker's (5xx).
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, as OpenAI names it (`size` for a bad
    /// width or height), or null.
    pub param: Option<String>,
    /// sd-worker's error code (`invalid_request`, `queue_full`, …; see `ErrorCode`), or null.
    pub code: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_request_parses_and_extensions_are_optional() {
        let req: OpenAiImageRequest = serde_json::from_str(
            r#"{"prompt":"a cat","model":"dall-e-3","n":2.0,"size":"64x64","quality":"hd",
                "style":"vivid","user":"u","response_format":"b64_json","seed":5,"steps":2,
                "unknown":true}"#,
        )
        .unwrap();
        assert_eq!(req.n, Some(2));
        assert_eq!(req.seed, Some(5));
        assert_eq!(req.response_format, Some(OpenAiResponseFormat::B64Json));
        assert!(serde_json::from_str::<OpenAiImageRequest>(r#"{"n":1}"#).is_err());
    }

    #[test]
    fn the_edit_field_list_is_the_serialized_fields() {
        let json = serde_json::to_value(OpenAiEditFields::default()).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut listed = OpenAiEditFields::FIELDS.to_vec();
        let mut keys = keys.clone();
        listed.sort_unstable();
        keys.sort_unstable();
        assert_eq!(listed, keys);
        for number in OpenAiEditFields::NUMBERS {
            assert!(OpenAiEditFields::FIELDS.contains(&number), "{number}");
        }
    }

    #[test]
    fn images_leave_out_the_other_format() {
        let image = OpenAiImage {
            b64_json: Some("AAAA".into()),
            url: None,
            seed: 5,
            job_id: "job-1".into(),
        };
        assert_eq!(
            serde_json::to_string(&image).unwrap(),
            r#"{"b64_json":"AAAA","seed":5,"job_id":"job-1"}"#
        );
        let error = OpenAiErrorBody {
            error: OpenAiError {
                message: "m".into(),
                kind: "invalid_request_error".into(),
                param: None,
                code: Some("invalid_request".into()),
            },
        };
        assert_eq!(
            serde_json::to_string(&error).unwrap(),
            r#"{"error":{"message":"m","type":"invalid_request_error","param":null,"code":"invalid_request"}}"#
        );
    }
}
