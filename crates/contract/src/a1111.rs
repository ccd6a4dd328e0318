//! The AUTOMATIC1111 web UI API subset (`/sdapi/v1/...`), as its clients
//! (Open WebUI, SillyTavern, the `webuiapi` Python package) send and read it.
//!
//! Requests name A1111's fields; the worker maps them onto a job request and
//! ignores the many A1111 fields it has no use for (`enable_hr`, `styles`,
//! `alwayson_scripts`, ...), which these types do not declare. Samplers are
//! A1111's display names (`Euler a`, `DPM++ 2M Karras`), kept as text here:
//! the worker matches them without regard to case and names the known ones
//! when one is not.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The sampler names a request may give, as `GET /sdapi/v1/samplers` lists
/// them; case does not matter, and `""` (like absent or `null`) takes the
/// worker's default. `PLMS` is the worker's `pndm`.
pub const SAMPLER_NAMES: [&str; 8] = [
    "Euler a",
    "Euler",
    "DPM++ 2M",
    "DPM++ 2M Karras",
    "DDIM",
    "PLMS",
    "UniPC",
    "LCM",
];

/// The noise schedules a request may give (`scheduler`): the sampler's own,
/// or Karras sigmas (with `DPM++ 2M` only); `""` is `automatic`.
pub const SCHEDULE_NAMES: [&str; 2] = ["automatic", "karras"];

/// The schema of a name from `names`, `""` or `null`.
fn name_schema(names: &[&str], description: &str) -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .enum_values(Some(
            names
                .iter()
                .copied()
                .chain([""])
                .map(serde_json::Value::from)
                .chain([serde_json::Value::Null]),
        ))
        .description(Some(description))
        .build()
}

fn sampler_schema() -> utoipa::openapi::schema::Object {
    name_schema(
        &SAMPLER_NAMES,
        "The sampler, by A1111 name (`GET /sdapi/v1/samplers`; any case); the worker's default \
         when absent, `null` or empty.",
    )
}

fn sampler_index_schema() -> utoipa::openapi::schema::Object {
    name_schema(
        &SAMPLER_NAMES,
        "A1111's older name for `sampler_name`, used when that is absent, `null` or empty \
         (a name given here must be known either way).",
    )
}

fn schedule_schema() -> utoipa::openapi::schema::Object {
    name_schema(
        &SCHEDULE_NAMES,
        "The noise schedule (`GET /sdapi/v1/schedulers`; any case): `karras` goes with \
         `DPM++ 2M` only.",
    )
}

/// The A1111 settings a request may override for itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OverrideSettings {
    /// Clip skip, 1 to 12 (1, the last layer, when absent): the text encoders'
    /// layer the prompts are taken from, counted from the last; the job's
    /// `clip_skip` is one less.
    #[serde(
        default,
        rename = "CLIP_stop_at_last_layers",
        deserialize_with = "crate::whole::option"
    )]
    #[schema(minimum = 1, maximum = 12)]
    pub clip_stop_at_last_layers: Option<u32>,
    /// The checkpoint to use: ignored (the worker serves one model).
    #[serde(default)]
    pub sd_model_checkpoint: Option<String>,
}

/// The fields `txt2img` and `img2img` share. Absent or `null` fields take the
/// worker's defaults (`GET /v1/info`), not A1111's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct A1111Generation {
    /// What to draw: up to 4096 characters, not all of them white space.
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
    /// Denoising steps, 1 to 150.
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(minimum = 1, maximum = 150)]
    pub steps: Option<u32>,
    /// Classifier-free guidance scale, 0 to 30.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 30)]
    pub cfg_scale: Option<f64>,
    /// Width in pixels, a multiple of 8 from 64 up to the worker's `max_size`.
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(minimum = 64, maximum = 2048, multiple_of = 8)]
    pub width: Option<u32>,
    /// Height in pixels, a multiple of 8 from 64 up to the worker's `max_size`.
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(minimum = 64, maximum = 2048, multiple_of = 8)]
    pub height: Option<u32>,
    /// Seed of the first image (the next ones take seed + 1, ...); -1 or
    /// absent: drawn at random.
    #[serde(default, deserialize_with = "seed")]
    #[schema(minimum = -1, maximum = 9223372036854775807_i64)]
    pub seed: Option<i64>,
    /// The sampler, by A1111 name (`GET /sdapi/v1/samplers`); the worker's default when absent.
    #[serde(default)]
    #[schema(schema_with = sampler_schema)]
    pub sampler_name: Option<String>,
    /// A1111's older name for `sampler_name`, read when that is absent.
    #[serde(default)]
    #[schema(schema_with = sampler_index_schema)]
    pub sampler_index: Option<String>,
    /// The noise schedule (`GET /sdapi/v1/schedulers`).
    #[serde(default)]
    #[schema(schema_with = schedule_schema)]
    pub scheduler: Option<String>,
    /// Images per batch, 1 to 8 (each image is one job).
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(minimum = 1, maximum = 8)]
    pub batch_size: Option<u32>,
    /// Batches, 1 to 16: `batch_size × n_iter` images, seeds `seed`, `seed + 1`, ...
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(minimum = 1, maximum = 16)]
    pub n_iter: Option<u32>,
    /// Settings for this request only; keys other than these are ignored.
    #[serde(default, deserialize_with = "settings")]
    pub override_settings: Option<OverrideSettings>,
}

impl A1111Generation {
    /// The most images per batch (`batch_size`).
    pub const MAX_BATCH_SIZE: u32 = 8;
    /// The most batches (`n_iter`).
    pub const MAX_N_ITER: u32 = 16;

    /// How many images the request asks for: `batch_size × n_iter`.
    pub fn image_count(&self) -> u32 {
        self.batch_size.unwrap_or(1).max(1) * self.n_iter.unwrap_or(1).max(1)
    }
}

/// The body of `POST /sdapi/v1/txt2img`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Txt2ImgRequest {
    /// The fields `txt2img` and `img2img` share.
    #[serde(flatten)]
    pub generation: A1111Generation,
}

/// The body of `POST /sdapi/v1/img2img`: image to image, or inpainting with a `mask`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Img2ImgRequest {
    /// The fields `txt2img` and `img2img` share.
    #[serde(flatten)]
    pub generation: A1111Generation,
    /// The input picture: one base64 PNG or JPEG, with or without a
    /// `data:image/...;base64,` prefix. It is resized to `width` × `height`.
    #[schema(min_items = 1, max_items = 1)]
    pub init_images: Vec<String>,
    /// A mask (base64 PNG or JPEG, white = repaint): inpainting.
    #[serde(default)]
    #[schema(min_length = 1)]
    pub mask: Option<String>,
    /// How far to move away from the input, above 0 up to 1 (0.75 when absent).
    #[serde(default)]
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub denoising_strength: Option<f64>,
    /// What the masked area starts from (A1111: 0 fill, 1 original, 2 latent
    /// noise, 3 latent nothing). Every value runs as 1 (the original, noised
    /// to `denoising_strength`).
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(minimum = 0, maximum = 3)]
    pub inpainting_fill: Option<u8>,
    /// Whether to repaint the black part of the mask instead: only 0 (no) is supported.
    #[serde(default, deserialize_with = "crate::whole::option")]
    #[schema(minimum = 0, maximum = 0)]
    pub inpainting_mask_invert: Option<u8>,
}

/// The answer of `txt2img` and `img2img`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct A1111Images {
    /// The images, base64 PNGs with A1111's `parameters` text. Empty when the
    /// call was interrupted (`POST /sdapi/v1/interrupt`).
    pub images: Vec<String>,
    /// The request as received (for `img2img`, with `init_images` and `mask` set to `null`).
    #[schema(value_type = Object)]
    pub parameters: serde_json::Value,
    /// An [`A1111Info`] encoded as a JSON string, as A1111 sends it.
    pub info: String,
}

/// What a generation ran with, sent JSON-encoded in [`A1111Images::info`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct A1111Info {
    /// The prompt.
    pub prompt: String,
    /// The prompt of each image.
    pub all_prompts: Vec<String>,
    /// The negative prompt (empty when none).
    pub negative_prompt: String,
    /// The negative prompt of each image.
    pub all_negative_prompts: Vec<String>,
    /// The first image's seed.
    pub seed: u64,
    /// Each image's seed.
    pub all_seeds: Vec<u64>,
    /// Subseeds are not used: the seed.
    pub subseed: u64,
    /// Subseeds are not used: the seeds.
    pub all_subseeds: Vec<u64>,
    /// Always 0 (no subseed variation).
    pub subseed_strength: f64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The sampler, by A1111 name.
    pub sampler_name: String,
    /// Guidance scale.
    pub cfg_scale: f64,
    /// Denoising steps.
    pub steps: u32,
    /// Images per batch.
    pub batch_size: u32,
    /// Batches.
    pub n_iter: u32,
    /// Image-to-image strength (`null` for text to image).
    pub denoising_strength: Option<f64>,
    /// Clip skip as A1111 counts it (1: the last layer).
    pub clip_skip: u32,
    /// The model's name.
    pub sd_model_name: String,
    /// Each image's `parameters` text.
    pub infotexts: Vec<String>,
    /// Always 0.
    pub index_of_first_image: u32,
    /// Always empty.
    pub styles: Vec<String>,
}

/// The answer of `GET /sdapi/v1/progress`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct A1111Progress {
    /// The running job's share of steps done, 0 to 1 (0 when idle).
    pub progress: f64,
    /// Seconds left for the running job, estimated from the time its steps took.
    pub eta_relative: f64,
    /// The worker's state.
    pub state: A1111State,
    /// A live preview (base64 PNG) of the running job, once it has one.
    pub current_image: Option<String>,
    /// `Step n/m` while a job runs.
    pub textinfo: Option<String>,
}

/// The `state` of `GET /sdapi/v1/progress`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct A1111State {
    /// Whether the running job was skipped (never: skipping is not supported).
    pub skipped: bool,
    /// Whether the running job has been asked to stop.
    pub interrupted: bool,
    /// The running job's id (empty when idle).
    pub job: String,
    /// Jobs running or queued.
    pub job_count: u32,
    /// Always `"0"`.
    pub job_timestamp: String,
    /// Always 0.
    pub job_no: u32,
    /// The running job's last finished step.
    pub sampling_step: u32,
    /// The running job's steps.
    pub sampling_steps: u32,
}

/// One model of `GET /sdapi/v1/sd-models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct A1111Model {
    /// The name clients show and set as `sd_model_checkpoint`.
    pub title: String,
    /// The model's name.
    pub model_name: String,
    /// A1111's short hash (not computed: `null`).
    pub hash: Option<String>,
    /// The weights' SHA-256 (not computed: `null`).
    pub sha256: Option<String>,
    /// The model's name (never a path on the worker's machine).
    pub filename: String,
    /// A config file (none: `null`).
    pub config: Option<String>,
}

/// One sampler of `GET /sdapi/v1/samplers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct A1111Sampler {
    /// The A1111 name.
    pub name: String,
    /// Other names accepted for it (the worker's own names included).
    pub aliases: Vec<String>,
    /// Sampler options (none).
    pub options: BTreeMap<String, String>,
}

/// One scheduler of `GET /sdapi/v1/schedulers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct A1111Scheduler {
    /// The name a request gives.
    pub name: String,
    /// The name to show.
    pub label: String,
    /// Other names accepted for it.
    pub aliases: Option<Vec<String>>,
    /// Always -1.
    pub default_rho: f64,
    /// Always false.
    pub need_inner_model: bool,
}

/// The answer of `GET /sdapi/v1/options`: the settings clients read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct A1111Options {
    /// The model served.
    pub sd_model_checkpoint: String,
    /// CLIP skip: 1.
    #[serde(rename = "CLIP_stop_at_last_layers")]
    pub clip_stop_at_last_layers: u32,
    /// `png`.
    pub samples_format: String,
    /// `Automatic`.
    pub sd_vae: String,
}

/// The body of `POST /sdapi/v1/options`; other settings are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct A1111OptionsUpdate {
    /// The model to use: only the model served (`GET /sdapi/v1/sd-models`) is accepted.
    #[serde(default)]
    pub sd_model_checkpoint: Option<String>,
}

/// The answer of `GET /sdapi/v1/embeddings`: the worker's `--embeddings-dir`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct A1111Embeddings {
    /// Loaded embeddings by name: `{"step", "sd_checkpoint",
    /// "sd_checkpoint_name", "shape", "vectors"}` (only the last two known).
    #[schema(value_type = Object)]
    pub loaded: BTreeMap<String, serde_json::Value>,
    /// Skipped embeddings by name (unreadable files, another model family's).
    #[schema(value_type = Object)]
    pub skipped: BTreeMap<String, serde_json::Value>,
}

/// The answer of `GET /sdapi/v1/scripts`: no scripts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct A1111Scripts {
    /// Text-to-image scripts (none).
    pub txt2img: Vec<String>,
    /// Image-to-image scripts (none).
    pub img2img: Vec<String>,
}

/// An A1111 error, in the shape its API answers with: FastAPI's exception
/// name in `error`, the message in `detail` and `errors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct A1111Error {
    /// The kind of error: the worker's error code (`invalid_request`, `queue_full`, ...).
    pub error: String,
    /// What went wrong, naming the field and the values accepted.
    pub detail: String,
    /// Always empty.
    pub body: String,
    /// The same message as `detail`.
    pub errors: String,
}

/// An empty JSON object, the answer of calls that only act.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct A1111Done {}

/// Override settings: an object or `null` (serde's derived structs would
/// also take an array of the values in order).
fn settings<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<OverrideSettings>, D::Error> {
    let Some(map) =
        Option::<serde_json::Map<String, serde_json::Value>>::deserialize(deserializer)?
    else {
        return Ok(None);
    };
    serde_json::from_value(serde_json::Value::Object(map))
        .map(Some)
        .map_err(de::Error::custom)
}

/// A seed: -1 (random), a whole number, or `null`; `5.0` is taken as 5.
fn seed<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    struct SeedVisitor;

    impl<'de> Visitor<'de> for SeedVisitor {
        type Value = Option<i64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a whole number from -1 (random) or null")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
            if n < -1 {
                return Err(E::custom(format!("{n} is below -1")));
            }
            Ok(Some(n))
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
            i64::try_from(n)
                .map(Some)
                .map_err(|_| E::custom(format!("{n} is out of range")))
        }

        fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
            if n.fract() != 0.0 || !(-1.0..9.2e18).contains(&n) {
                return Err(E::custom(format!("{n} is not a whole number from -1")));
            }
            Ok(Some(n as i64))
        }
    }

    deserializer.deserialize_option(SeedVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webuiapi_body_parses_and_its_extra_fields_are_ignored() {
        let body = r#"{"enable_hr":false,"prompt":"a cat","styles":[],"seed":5,"subseed":-1,
            "batch_size":2,"n_iter":1,"steps":2,"cfg_scale":7.0,"width":64,"height":64.0,
            "negative_prompt":"","override_settings":{},"sampler_name":"Euler a",
            "scheduler":"automatic","sampler_index":"Euler a","alwayson_scripts":{}}"#;
        let req: Txt2ImgRequest = serde_json::from_str(body).unwrap();
        let g = &req.generation;
        assert_eq!((g.seed, g.height, g.image_count()), (Some(5), Some(64), 2));
        assert_eq!(g.sampler_name.as_deref(), Some("Euler a"));
    }

    #[test]
    fn seeds_are_whole_numbers_from_minus_one() {
        let seed = |json: &str| {
            serde_json::from_str::<Txt2ImgRequest>(&format!(r#"{{"prompt":"x","seed":{json}}}"#))
                .map(|r| r.generation.seed)
        };
        assert_eq!(seed("-1").unwrap(), Some(-1));
        assert_eq!(seed("7.0").unwrap(), Some(7));
        assert_eq!(seed("null").unwrap(), None);
        assert!(seed("-2").is_err());
        assert!(seed("1.5").is_err());
        assert!(seed("\"5\"").is_err());
    }

    #[test]
    fn override_settings_are_an_object() {
        let parse = |json: &str| {
            serde_json::from_str::<Txt2ImgRequest>(&format!(
                r#"{{"prompt":"x","override_settings":{json}}}"#
            ))
            .map(|r| r.generation.override_settings)
        };
        let settings = parse(r#"{"CLIP_stop_at_last_layers":1.0,"sd_vae":"x"}"#).unwrap();
        assert_eq!(settings.unwrap().clip_stop_at_last_layers, Some(1));
        assert_eq!(parse("null").unwrap(), None);
        assert!(parse("[null, null]").is_err());
        assert!(parse(r#"{"CLIP_stop_at_last_layers":"2"}"#).is_err());
    }
}
