//! `GET /health`, `GET /ready` and `GET /v1/info`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{PromptSyntax, SchedulerKind};

/// The answer to `GET /health`: the process is up and serving HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `"ok"`.
    pub status: String,
}

/// Where the model is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadinessState {
    /// The model is being loaded.
    Loading,
    /// The model is loaded and jobs are accepted.
    Ready,
    /// The model failed to load; `reason` says why.
    Failed,
    /// The worker is shutting down.
    Stopping,
    /// The shared queue (`--redis-url`) cannot be reached; the worker
    /// reconnects by itself.
    QueueUnreachable,
}

/// The answer to `GET /ready`: 200 when ready, 503 otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// Whether jobs are accepted.
    pub ready: bool,
    /// Where the model is in its life.
    pub state: ReadinessState,
    /// Why it is not ready (absent when ready).
    pub reason: Option<String>,
}

/// The values a job takes for the fields it leaves out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GenerationDefaults {
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Denoising steps.
    pub steps: u32,
    /// Classifier-free guidance scale.
    pub guidance_scale: f64,
    /// Denoising scheduler.
    pub scheduler: SchedulerKind,
    /// How prompts are read when a job does not say.
    pub prompt_syntax: PromptSyntax,
}

/// The bounds the worker enforces on requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Limits {
    /// Smallest width or height in pixels.
    pub min_size: u32,
    /// Largest width or height in pixels.
    pub max_size: u32,
    /// Width and height must be multiples of this.
    pub size_multiple: u32,
    /// Most characters in a prompt or negative prompt.
    pub max_prompt_chars: u32,
    /// Largest number of denoising steps.
    pub max_steps: u32,
    /// Largest guidance scale.
    pub max_guidance_scale: f64,
    /// Most images one job may ask for (`num_images`).
    pub max_num_images: u32,
    /// Jobs that may wait in the queue besides the running one.
    pub max_queue: u32,
    /// Largest request body in bytes.
    pub max_body_bytes: u64,
    /// Largest input picture or mask of image-to-image and inpainting, in pixels.
    pub max_input_pixels: u64,
}

/// How many jobs the worker holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobCounts {
    /// Waiting in the queue.
    pub queued: u32,
    /// Being generated (0 or 1).
    pub running: u32,
    /// Known to the worker, finished ones included until they expire.
    pub retained: u32,
}

/// The answer to `GET /v1/info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerInfo {
    /// The worker's id (as the hive knows it).
    pub worker_id: String,
    /// The worker's version.
    pub version: String,
    /// The model it serves: a Hugging Face repo id or a local folder.
    pub model: String,
    /// The `--sd-version` preset in force, if any.
    pub preset: Option<String>,
    /// The VAE replacing the model's own (`--vae`: a folder, a repo id or a
    /// `.safetensors` file, as given), if any.
    pub vae: Option<String>,
    /// The model family, once the model is loaded (`sd1`, `sd2`, `sdxl`, ...).
    pub family: Option<String>,
    /// The compute backend: `cpu`, `cuda` or `metal`.
    pub backend: String,
    /// The device index.
    pub device: u32,
    /// The UNet's and text encoders' weights' storage dtype: `f32`, `f16` or
    /// `bf16` (`compute` says what computes in what).
    pub dtype: String,
    /// The dtypes each part computes in and the attention kernel, once the
    /// model is loaded.
    pub compute: Option<ComputeInfo>,
    /// Whether jobs are accepted.
    pub ready: bool,
    /// Defaults for fields a job leaves out, once the model is loaded.
    pub defaults: Option<GenerationDefaults>,
    /// Bounds on requests.
    pub limits: Limits,
    /// Every scheduler a job may name.
    pub schedulers: Vec<SchedulerKind>,
    /// Jobs held now.
    pub jobs: JobCounts,
    /// The LoRA directory, when the worker has one (`--lora-dir`).
    pub loras: Option<LoraDirectory>,
    /// The textual-inversion embeddings directory, when the worker has one
    /// (`--embeddings-dir`), with the names prompts may use.
    pub embeddings: Option<EmbeddingDirectory>,
}

/// The worker's embeddings directory, in `GET /v1/info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingDirectory {
    /// The directory, as the worker was started with it.
    pub directory: String,
    /// The names of the embeddings prompts may use (their trigger words),
    /// sorted; `GET /v1/embeddings` has the details and the files skipped.
    pub names: Vec<String>,
}

/// One textual-inversion embedding prompts may name (`GET /v1/embeddings`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingInfo {
    /// The trigger word: the file's name without `.safetensors`. Where it
    /// appears in a prompt or negative prompt, its vectors take its place.
    pub name: String,
    /// How many token positions its vectors take (of a chunk's 75).
    pub vectors: usize,
    /// The file's layout: `a1111`, `a1111_sdxl` (`clip_l`/`clip_g`) or `diffusers`.
    pub format: String,
    /// The width of its vectors for each text encoder (one, or SDXL's two).
    pub widths: Vec<usize>,
}

/// An embedding file that is not used, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SkippedEmbeddingInfo {
    /// The file's name without its extension.
    pub name: String,
    /// Why it is skipped (a pickle file, no known layout, another model family).
    pub reason: String,
}

/// `GET /v1/embeddings`: the embeddings in the worker's `--embeddings-dir`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingList {
    /// The embeddings prompts may name, sorted by name.
    pub embeddings: Vec<EmbeddingInfo>,
    /// The files that are not used, with the reason.
    pub skipped: Vec<SkippedEmbeddingInfo>,
}

/// What computes in which dtype, in `GET /v1/info`. Whatever these say, the
/// latents and the scheduler's arithmetic are f32, and in half precision the
/// norms' statistics, the attention softmax and the timestep embedding too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComputeInfo {
    /// The UNet's activations: `f32`, `f16` or `bf16`.
    pub unet: String,
    /// The text encoders' layers.
    pub text_encoders: String,
    /// The VAE's weights and activations (`f32` under f16 compute for an SDXL
    /// VAE whose config sets `force_upcast`, as diffusers upcasts it).
    pub vae: String,
    /// What computes attention: `cpu_blocked` (the f32 CPU kernel),
    /// `flash_attn` (FlashAttention-2 on CUDA) or `chunked` (blocks of query
    /// rows through the device's matrix products, softmax in f32).
    pub attention: String,
}

/// The worker's LoRA directory, in `GET /v1/info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoraDirectory {
    /// The directory, as the worker was started with it.
    pub directory: String,
    /// How many adapters it holds (`GET /v1/loras` lists them).
    pub count: usize,
}

/// One LoRA adapter a job may name (`GET /v1/loras`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoraInfo {
    /// The name a job gives as `loras[].path`: the file's path inside the
    /// directory, without `.safetensors`.
    pub name: String,
    /// The file's size in bytes.
    pub size_bytes: u64,
    /// Its key layout, `kohya` or `peft`; absent when its header is not a LoRA's.
    pub format: Option<String>,
    /// What it adapts: `text_encoder`, `text_encoder_2`, `unet`.
    pub targets: Vec<String>,
}

/// `GET /v1/loras`: the adapters in the worker's `--lora-dir`, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoraList {
    /// Every `.safetensors` file in the directory and its folders.
    pub loras: Vec<LoraInfo>,
}
