//! The bounds every worker enforces on a request, whatever its configuration.
//!
//! The worker's validator enforces these, and `GET /v1/info` reports them.
//! Strength's range (0 to 1, above 0 so that a step runs) is the pipeline's
//! own and checked by sd-core. The `#[schema]` attributes of [`crate::request`] repeat
//! them as literals, since utoipa takes no constant there; the worker's
//! OpenAPI tests check that the published document and the validator agree.
//!
//! The bounds that depend on the worker's flags (the largest size, the
//! queue, the body) are known at run time only: `GET /v1/info`
//! reports them with these in [`crate::Limits`].

/// The fewest denoising steps a job may ask for.
pub const MIN_STEPS: u32 = 1;
/// The most denoising steps a job may ask for.
pub const MAX_STEPS: u32 = 150;
/// The smallest classifier-free guidance scale a job may ask for.
pub const MIN_GUIDANCE_SCALE: f64 = 0.0;
/// The largest classifier-free guidance scale a job may ask for.
pub const MAX_GUIDANCE_SCALE: f64 = 30.0;
/// Width and height must be multiples of this (the VAE's downsampling factor).
pub const SIZE_MULTIPLE: u32 = 8;
/// The smallest width or height in pixels.
pub const MIN_SIZE: u32 = 64;
/// The largest width or height in pixels unless a worker is configured
/// otherwise (`--max-size`); the OpenAPI document a worker serves states its own.
pub const DEFAULT_MAX_SIZE: u32 = 2048;
/// The most characters (Unicode scalar values, as JSON Schema's `maxLength`
/// counts) a prompt or negative prompt may have. An AUTOMATIC1111-style
/// prompt (weights, tags, commas) runs about 3.7 characters a CLIP token, so
/// this fits about 1,100 tokens, fifteen 75-token chunks, past the longest
/// prompts seen in use; beyond it a megabyte of prompt could hold the engine
/// in the tokenizer for seconds.
pub const MAX_PROMPT_CHARS: usize = 4096;
/// The most text-encoder layers a job may skip (`clip_skip`): one less than
/// the 12 layers of SD 1.x's and SDXL's first encoder, AUTOMATIC1111's
/// "Clip skip" 12.
pub const MAX_CLIP_SKIP: u32 = 11;
/// The fewest images a job may ask for.
pub const MIN_NUM_IMAGES: u32 = 1;
/// The most images a job may ask for (`num_images`): one job holds all its
/// images (and, in its event log, each twice) until it expires.
pub const MAX_NUM_IMAGES: u32 = 8;
/// The most LoRA adapters one job may apply (`loras`).
pub const MAX_LORAS: usize = 8;
/// The bounds of a LoRA's `strength`: diffusers' `lora_scale`, where 1 is the
/// adapter as trained and negative values push away from it. Beyond ±4 an
/// adapter only breaks the image.
pub const MAX_LORA_STRENGTH: f32 = 4.0;
