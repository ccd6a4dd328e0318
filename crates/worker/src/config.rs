//! The serve command line (every flag also read from an environment variable)
//! and the validated configuration it becomes.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use candle_core::DType;
use clap::{Args, ValueEnum};
use sd_contract::limits::MIN_SIZE;
use sd_core::model::single_file::is_single_file;
use sd_core::model::{LoadOptions, ModelRequest, PredictionType, WeightVariant};
use sd_core::pipeline::BatchBudget;
use sd_core::presets::{self, Preset};
use sd_core::prompt::PromptSyntax;

use crate::decoding::{DecodingArgs, DecodingError};
use crate::embeddings::EmbeddingsDir;
use crate::engine::fake::FakeEngineConfig;
use crate::jobs::redis::{RedisArgs, RedisConfig};
use crate::loras::LoraDir;

/// The default budget of the parsed-LoRA cache, in MiB: a few SDXL adapters
/// or a dozen SD 1.5 ones, in f32.
pub const DEFAULT_LORA_CACHE_MIB: usize = 1024;

/// Flags of the worker when it serves (the binary's default command).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The worker's id, as the hive knows it and as jobs' status names the
    /// worker that ran them; `HOSTNAME-PID` when absent.
    #[arg(long, env = "SD_WORKER_ID")]
    pub worker_id: Option<String>,
    /// A model preset: v1-5, v2-1, xl, turbo (SDXL-Turbo) or sd-turbo. Names a
    /// Hugging Face repo and the defaults for size, steps, guidance and scheduler.
    #[arg(long, env = "SD_WORKER_SD_VERSION", value_parser = parse_preset)]
    pub sd_version: Option<&'static Preset>,
    /// A Hugging Face repo id, a local diffusers folder or a single-file
    /// `.safetensors` checkpoint (SD 1.x, 2.x, SDXL); overrides the preset's repo.
    #[arg(long, env = "SD_WORKER_MODEL")]
    pub model: Option<String>,
    /// What changes the model loaded: `--config`, `--vae`, `--prediction-type`.
    #[command(flatten)]
    pub model_flags: ModelFlags,
    /// Address to listen on.
    #[arg(long, env = "SD_WORKER_HOST", default_value_t = DEFAULT_HOST)]
    pub host: IpAddr,
    /// Port to listen on (0 picks a free one and logs it).
    #[arg(long, env = "SD_WORKER_PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// The URL clients and the hive reach this worker at; `http://HOST:PORT` when absent.
    #[arg(long, env = "SD_WORKER_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Base URL of the hive (or queen) to send the ready callback and heartbeats to.
    #[arg(long, visible_alias = "queen-url", env = "SD_WORKER_CALLBACK_URL")]
    pub callback_url: Option<String>,
    /// Device index (the GPU for cuda and metal builds).
    #[arg(long, env = "SD_WORKER_DEVICE", default_value_t = DEFAULT_DEVICE)]
    pub device: u32,
    /// `--dtype` and `--compute-dtype`.
    #[command(flatten)]
    pub precision: PrecisionArgs,
    /// Memory in MiB a job of several images may spend on running them
    /// together through the UNet (each image beyond the first takes its share;
    /// the images that do not fit run in further passes); 0 makes them one by one.
    #[arg(long, env = "SD_WORKER_BATCH_MEMORY_MIB", default_value_t = DEFAULT_BATCH_MEMORY_MIB)]
    pub batch_memory_mib: u64,
    /// The tiny autoencoder, the default decoder and VAE tiling.
    #[command(flatten)]
    pub decoding: DecodingArgs,
    /// Jobs that may wait in the queue besides the running one; more get 503.
    #[arg(long, env = "SD_WORKER_MAX_QUEUE", default_value_t = DEFAULT_MAX_QUEUE, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_queue: u32,
    /// When set, every route but /health and /ready needs `Authorization: Bearer <key>`.
    #[arg(long, env = "SD_WORKER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Host names, besides IP literals, `localhost` and the `--public-url` host,
    /// that requests may name in `Host` (a leading dot also allows subdomains);
    /// `*` allows any. Comma-separated.
    #[arg(long, env = "SD_WORKER_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Origins (`https://app.example.com`) whose pages may call the API from a
    /// browser (CORS); `*` allows any. Comma-separated; none by default.
    #[arg(long, env = "SD_WORKER_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Refuse job requests with fields the API does not know (400) instead of
    /// ignoring them with a `Warning` header.
    #[arg(long, env = "SD_WORKER_STRICT")]
    pub strict: bool,
    /// Serve `GET /metrics` without the API key (for a Prometheus that
    /// scrapes without credentials).
    #[arg(long, env = "SD_WORKER_METRICS_PUBLIC")]
    pub metrics_public: bool,
    /// How long finished jobs (and their images) are kept for status and late streams.
    #[arg(long, env = "SD_WORKER_JOB_RETENTION", default_value_t = DEFAULT_JOB_RETENTION.into())]
    pub job_retention: humantime::Duration,
    /// Most finished jobs kept at once; beyond it the oldest go before their retention ends.
    #[arg(long, env = "SD_WORKER_MAX_FINISHED_JOBS", default_value_t = DEFAULT_MAX_FINISHED_JOBS)]
    pub max_finished_jobs: usize,
    /// Most bytes finished jobs may hold together (their result images and
    /// event logs); beyond it the oldest go, all but the newest.
    #[arg(long, env = "SD_WORKER_MAX_RETAINED_BYTES", default_value_t = DEFAULT_MAX_RETAINED_BYTES)]
    pub max_retained_bytes: u64,
    /// Interval of the heartbeats sent to the callback URL.
    #[arg(long, env = "SD_WORKER_HEARTBEAT_INTERVAL", default_value_t = DEFAULT_HEARTBEAT_INTERVAL.into())]
    pub heartbeat_interval: humantime::Duration,
    /// Interval of keep-alive comments on idle event streams.
    #[arg(long, env = "SD_WORKER_SSE_KEEP_ALIVE", default_value_t = DEFAULT_SSE_KEEP_ALIVE.into())]
    pub sse_keep_alive: humantime::Duration,
    /// Largest request body in bytes.
    #[arg(long, env = "SD_WORKER_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: u64,
    /// Largest image width or height in pixels.
    #[arg(long, env = "SD_WORKER_MAX_SIZE", default_value_t = DEFAULT_MAX_SIZE)]
    pub max_size: u32,
    /// Largest input picture or mask (image-to-image, inpainting) in pixels.
    #[arg(long, env = "SD_WORKER_MAX_INPUT_PIXELS", default_value_t = DEFAULT_MAX_INPUT_PIXELS)]
    pub max_input_pixels: u64,
    /// On SIGTERM, let the running job finish instead of cancelling it.
    #[arg(long, env = "SD_WORKER_DRAIN_ON_SHUTDOWN")]
    pub drain_on_shutdown: bool,
    /// How prompts are read when a job does not say: a1111 (`(emphasis)`,
    /// `[less]`, `(word:1.3)`, BREAK, no 75-token limit) or plain (diffusers').
    #[arg(long, env = "SD_WORKER_PROMPT_SYNTAX", default_value_t = DEFAULT_PROMPT_SYNTAX)]
    pub prompt_syntax: PromptSyntax,
    /// After SIGTERM, how long jobs may take to end; then the unfinished ones
    /// are cancelled and the worker exits, even if a step is still computing.
    #[arg(long, env = "SD_WORKER_SHUTDOWN_TIMEOUT", default_value_t = DEFAULT_SHUTDOWN_TIMEOUT.into())]
    pub shutdown_timeout: humantime::Duration,
    /// How long a request head may take from its first byte; then the connection is closed.
    #[arg(long, env = "SD_WORKER_HEADER_TIMEOUT", default_value_t = DEFAULT_HEADER_TIMEOUT.into())]
    pub header_timeout: humantime::Duration,
    /// How long a request body may take to arrive; then the request gets 408.
    #[arg(long, env = "SD_WORKER_BODY_TIMEOUT", default_value_t = DEFAULT_BODY_TIMEOUT.into())]
    pub body_timeout: humantime::Duration,
    /// How long a connection may wait for its next request; then it is closed.
    #[arg(long, env = "SD_WORKER_IDLE_TIMEOUT", default_value_t = DEFAULT_IDLE_TIMEOUT.into())]
    pub idle_timeout: humantime::Duration,
    /// Most connections served at once; more wait in the listen backlog until one closes.
    #[arg(long, env = "SD_WORKER_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Most event streams open at once; more get 503.
    #[arg(long, env = "SD_WORKER_MAX_STREAMS", default_value_t = DEFAULT_MAX_STREAMS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams: u32,
    /// Save every finished image (PNG with its `parameters` text) and a JSON
    /// file of its job's parameters in this folder, one subfolder per day (UTC).
    #[arg(long, env = "SD_WORKER_OUTPUT_DIR")]
    pub output_dir: Option<std::path::PathBuf>,
    /// The folder of LoRA `.safetensors` files jobs may name in `loras`
    /// (`GET /v1/loras` lists them); without it, jobs with LoRAs are refused.
    #[arg(long, env = "SD_WORKER_LORA_DIR")]
    pub lora_dir: Option<std::path::PathBuf>,
    /// The folder of textual-inversion embeddings (`.safetensors`, AUTOMATIC1111's
    /// or diffusers' layout) prompts may name by file name; read at startup.
    #[arg(long, env = "SD_WORKER_EMBEDDINGS_DIR")]
    pub embeddings_dir: Option<std::path::PathBuf>,
    /// How many MiB of parsed LoRA adapters stay cached between jobs (the
    /// adapter in use is kept even when larger).
    #[arg(long, env = "SD_WORKER_LORA_CACHE_MIB", default_value_t = DEFAULT_LORA_CACHE_MIB)]
    pub lora_cache_mib: usize,
    /// The shared job queue: `--redis-url` and its bounds.
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Test aid: serve a fake engine that paints gradients instead of loading a model.
    /// Its value configures it (`step_ms=5,load_ms=0,load_error=...,fail_prompt=...,abort_prompt=...`).
    #[arg(long, env = "SD_WORKER_FAKE_ENGINE", hide = true, num_args = 0..=1, default_missing_value = "")]
    pub fake_engine: Option<FakeEngineConfig>,
}

/// The flags that change what `--model` loads (serve and `generate`).
#[derive(Debug, Clone, Default, Args)]
pub struct ModelFlags {
    /// For a single-file checkpoint: a diffusers folder or repo id whose
    /// configs and tokenizers replace the built-in ones (diffusers' `config=`).
    #[arg(long = "config", env = "SD_WORKER_MODEL_CONFIG")]
    pub config: Option<String>,
    /// A VAE replacing the model's: a diffusers VAE folder or repo id
    /// (e.g. madebyollin/sdxl-vae-fp16-fix) or a `.safetensors` VAE file.
    #[arg(long, env = "SD_WORKER_VAE")]
    pub vae: Option<String>,
    /// What the UNet predicts, epsilon or v_prediction, overriding the
    /// scheduler config (single-file SD 2.x models are taken as v_prediction
    /// at 768 px unless this says epsilon, as diffusers does).
    #[arg(long, env = "SD_WORKER_PREDICTION_TYPE")]
    pub prediction_type: Option<PredictionType>,
}

impl ModelFlags {
    /// The model request for `model`; `--config` needs a single-file checkpoint.
    pub fn request(
        &self,
        model: &str,
        variant: WeightVariant,
    ) -> Result<ModelRequest, ConfigError> {
        if self.config.is_some() && !is_single_file(Path::new(model)) {
            return Err(ConfigError::ConfigWithoutSingleFile(model.to_string()));
        }
        Ok(ModelRequest {
            model: model.to_string(),
            config: self.config.clone(),
            vae: self.vae.clone(),
            prediction_type: self.prediction_type,
            variant,
        })
    }
}

/// Default of `--host`: the loopback interface only.
pub const DEFAULT_HOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Default of `--port` ([`WorkerConfig::new`] takes port 0 instead).
pub const DEFAULT_PORT: u16 = 8080;
/// Default of `--device`: the first one.
pub const DEFAULT_DEVICE: u32 = 0;
/// Default of `--dtype` on the CPU (and Metal): weights kept in f32.
pub const DEFAULT_DTYPE: Dtype = Dtype::F32;
/// Default of `--dtype` on CUDA: weights kept and computed in f16.
pub const DEFAULT_GPU_DTYPE: Dtype = Dtype::F16;
/// Default of `--batch-memory-mib`: [`BatchBudget::DEFAULT`], on CPUs and GPUs alike.
pub const DEFAULT_BATCH_MEMORY_MIB: u64 = BatchBudget::DEFAULT.bytes >> 20;
/// Default of `--max-queue`.
pub const DEFAULT_MAX_QUEUE: u32 = 16;
/// Default of `--job-retention`: ten minutes.
pub const DEFAULT_JOB_RETENTION: Duration = Duration::from_secs(10 * 60);
/// Default of `--max-finished-jobs`.
pub const DEFAULT_MAX_FINISHED_JOBS: usize = 256;
/// Default of `--max-retained-bytes`: 512 MiB. A result at the default
/// `--max-size` (2048²) is at worst a 12 MiB PNG, 16 MiB as base64, so at least
/// 32 of the largest fit (and SD outputs compress to well under that), while
/// 256 results at the native 512² or 1024² (a few hundred KB to 2 MB each) fit
/// whole: the count caps typical jobs, the bytes only large ones, and the bound
/// stays small beside the model's own gigabytes.
pub const DEFAULT_MAX_RETAINED_BYTES: u64 = 512 << 20;
/// Default of `--heartbeat-interval`.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
/// Default of `--sse-keep-alive`.
pub const DEFAULT_SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Default of `--max-body-bytes`: 8 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 8 << 20;
/// Default of `--max-size`.
pub const DEFAULT_MAX_SIZE: u32 = sd_contract::limits::DEFAULT_MAX_SIZE;
/// Default of `--prompt-syntax`: AUTOMATIC1111's, which most prompts are written in.
pub const DEFAULT_PROMPT_SYNTAX: PromptSyntax = PromptSyntax::A1111;
/// Default of `--max-input-pixels`: 16 megapixels (4096 × 4096).
pub const DEFAULT_MAX_INPUT_PIXELS: u64 = 4096 * 4096;

/// Default of `--shutdown-timeout`: under the 30 s Kubernetes and Docker give
/// a process between SIGTERM and SIGKILL, so the worker ends its jobs itself.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(25);
/// Default of `--header-timeout`: a request head is a few hundred bytes that
/// any client sends in one go; ten seconds allow for a slow link.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `--body-timeout`: the largest body (8 MiB) at 2.2 Mbit/s, a
/// prompt-only request at any speed.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of `--idle-timeout`: as long as the usual load balancer's, so the
/// proxy in front closes an idle connection before the worker does.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of `--max-connections`: well under the usual limit of 1,024 open
/// files, so accepting never fails for lack of descriptors.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 512;
/// Default of `--max-streams`: a quarter of the connections, so streams never
/// starve status requests and health checks.
pub const DEFAULT_MAX_STREAMS: u32 = 128;

/// Parses a `--sd-version` value, listing the known presets when it is unknown.
pub fn parse_preset(name: &str) -> Result<&'static Preset, String> {
    presets::find(name).ok_or_else(|| {
        format!(
            "unknown preset `{name}` (expected one of: {})",
            presets::names()
        )
    })
}

/// A floating-point dtype of weights or activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dtype {
    /// 32-bit floats.
    F32,
    /// IEEE half precision: half the memory, 11-bit significand.
    F16,
    /// bfloat16: half the memory, f32's range, 8-bit significand.
    Bf16,
}

impl Dtype {
    /// The name `/v1/info` reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
        }
    }

    /// The candle dtype weights are stored in.
    pub fn storage(self) -> DType {
        match self {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::Bf16 => DType::BF16,
        }
    }
}

/// `--dtype` and `--compute-dtype`, shared by serve, `generate` and `bench`.
#[derive(Debug, Clone, Default, Args)]
pub struct PrecisionArgs {
    /// Storage dtype of the UNet's and text encoders' weight matrices; bf16 and
    /// f16 halve their memory [default: f16 on CUDA, f32 on the CPU and Metal].
    /// Where `--compute-dtype` is f32 (the CPU's default) computation stays f32,
    /// except that bf16 weights multiply in bf16 (f32 sums) where the CPU has
    /// AVX512-BF16; on a GPU the weights compute in their own dtype.
    #[arg(long, env = "SD_WORKER_DTYPE", value_enum)]
    pub dtype: Option<Dtype>,
    /// The dtype activations are computed in. `auto` is the weights' dtype on
    /// a GPU and f32 on the CPU; f16 or bf16 runs the UNet, the text encoders
    /// and the VAE in that dtype with norms, softmax, timestep embedding and
    /// scheduler in f32 (in f16 an SDXL VAE with `force_upcast` stays f32), and needs
    /// the weights in the same dtype (`--dtype` follows it when absent). On the
    /// CPU half compute runs candle's generic kernels: slow, for checks.
    #[arg(long, env = "SD_WORKER_COMPUTE_DTYPE", value_enum, default_value_t = ComputeDtype::Auto)]
    pub compute_dtype: ComputeDtype,
}

/// What `--compute-dtype` asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ComputeDtype {
    /// The weights' dtype on a GPU, f32 on the CPU.
    #[default]
    Auto,
    /// 32-bit floats.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

/// The weights' and the activations' dtypes, resolved for a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Precision {
    /// The weights' storage dtype.
    pub weights: Dtype,
    /// The activations' dtype: f32, or `weights` when half.
    pub compute: Dtype,
}

impl Default for Precision {
    fn default() -> Self {
        Self {
            weights: DEFAULT_DTYPE,
            compute: Dtype::F32,
        }
    }
}

impl Precision {
    /// The core's load options for these dtypes.
    pub fn load_options(self, variant: WeightVariant) -> LoadOptions {
        LoadOptions {
            variant,
            weight_dtype: self.weights.storage(),
            compute_dtype: self.compute.storage(),
        }
    }
}

/// A `--compute-dtype` the weights' dtype cannot serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--compute-dtype {compute} needs the weights stored in {compute} (--dtype {compute}), not {weights}: half-precision compute never keeps a wider copy of a weight"
)]
pub struct PrecisionError {
    /// The compute dtype asked for.
    pub compute: &'static str,
    /// The weights' dtype asked for.
    pub weights: &'static str,
}

impl PrecisionArgs {
    /// The dtypes on `backend`: `--dtype` (else the compute dtype when that is
    /// half, else f16 on CUDA and f32 elsewhere), and `--compute-dtype`
    /// (`auto`: the weights' dtype on a GPU, f32 on the CPU).
    pub fn resolve(&self, backend: Backend) -> Result<Precision, PrecisionError> {
        let asked = match self.compute_dtype {
            ComputeDtype::Auto => None,
            ComputeDtype::F32 => Some(Dtype::F32),
            ComputeDtype::F16 => Some(Dtype::F16),
            ComputeDtype::Bf16 => Some(Dtype::Bf16),
        };
        let weights = match (self.dtype, asked) {
            (Some(dtype), _) => dtype,
            (None, Some(half)) if half != Dtype::F32 => half,
            (None, _) if backend == Backend::Cuda => DEFAULT_GPU_DTYPE,
            (None, _) => DEFAULT_DTYPE,
        };
        let compute = match asked {
            Some(compute) => compute,
            None if backend == Backend::Cpu => Dtype::F32,
            None => weights,
        };
        if compute != Dtype::F32 && compute != weights {
            return Err(PrecisionError {
                compute: compute.as_str(),
                weights: weights.as_str(),
            });
        }
        Ok(Precision { weights, compute })
    }
}

/// The compute backend a binary is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `sd-worker-cpu`.
    Cpu,
    /// `sd-worker-cuda`.
    Cuda,
    /// `sd-worker-metal`.
    Metal,
}

impl Backend {
    /// The name the hive and `/v1/info` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
            Backend::Metal => "metal",
        }
    }

    /// The backend `device` belongs to.
    pub fn of(device: &candle_core::Device) -> Self {
        match device {
            candle_core::Device::Cpu => Backend::Cpu,
            candle_core::Device::Cuda(_) => Backend::Cuda,
            candle_core::Device::Metal(_) => Backend::Metal,
        }
    }

    /// Opens device `ordinal` of this backend (the index is ignored on the CPU).
    pub fn open_device(self, ordinal: usize) -> Result<candle_core::Device, DeviceError> {
        match self {
            Backend::Cpu => Ok(candle_core::Device::Cpu),
            Backend::Cuda => candle_core::Device::new_cuda(ordinal),
            Backend::Metal => candle_core::Device::new_metal(ordinal),
        }
        .map_err(|cause| DeviceError {
            backend: self,
            ordinal,
            cause,
        })
    }
}

/// A device of the binary's backend that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("opening {} device {ordinal}: {cause}", backend.as_str())]
pub struct DeviceError {
    /// The backend asked for.
    pub backend: Backend,
    /// The device index asked for.
    pub ordinal: usize,
    /// Why candle could not open it (part of the message, not a separate source).
    cause: candle_core::Error,
}

/// A configuration that cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Neither a model nor a preset.
    #[error(
        "no model: pass --model (a repo id, a folder or a .safetensors file) or --sd-version ({})",
        presets::names()
    )]
    NoModel,
    /// Inconsistent decoding flags.
    #[error(transparent)]
    Decoding(#[from] DecodingError),
    /// `--compute-dtype` and `--dtype` disagree.
    #[error(transparent)]
    Precision(#[from] PrecisionError),
    /// A bad `--allowed-origins` entry.
    #[error(
        "--allowed-origins takes `*` or origins like `https://host[:port]` (no path), got `{0}`"
    )]
    BadOrigin(String),
    /// `--config` given for a model that is not a single file.
    #[error("--config applies to single-file checkpoints; {0} is a folder or a repo id, which has its own configs")]
    ConfigWithoutSingleFile(String),
    /// A `--lora-dir` that is not a readable directory.
    #[error("--lora-dir: {0}")]
    BadLoraDir(String),
    /// An `--embeddings-dir` that is not a readable directory.
    #[error("--embeddings-dir: {0}")]
    BadEmbeddingsDir(String),
    /// A bad callback or public URL.
    #[error("--{flag} must start with http:// or https://, got `{value}`")]
    BadUrl {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
    },
    /// A `--redis-url` Redis cannot take (its password never shown).
    #[error("--redis-url takes redis://[:PASSWORD@]HOST[:PORT][/DB] or rediss://…, got `{url}`: {reason}")]
    BadRedisUrl {
        /// The URL, its password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Everything the worker needs to serve, validated.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The worker's id.
    pub worker_id: String,
    /// The model: a repo id, a folder or a single-file checkpoint.
    pub model: String,
    /// `--config`, `--vae` and `--prediction-type`.
    pub model_flags: ModelFlags,
    /// The preset in force: the one named by `--sd-version`, or the one whose repo `--model` is.
    pub preset: Option<&'static Preset>,
    /// Address to listen on.
    pub host: IpAddr,
    /// Port to listen on; 0 picks one.
    pub port: u16,
    /// The URL the worker is reached at, when not `http://HOST:PORT`.
    pub public_url: Option<String>,
    /// The hive's base URL.
    pub callback_url: Option<String>,
    /// The compute backend.
    pub backend: Backend,
    /// The device index.
    pub device: u32,
    /// The weights' and activations' dtypes.
    pub precision: Precision,
    /// The memory a job's images may take in one batched UNet pass.
    pub batch_budget: BatchBudget,
    /// The tiny autoencoder, the default decoder and VAE tiling.
    pub decoding: DecodingArgs,
    /// Jobs that may wait besides the running one.
    pub max_queue: usize,
    /// The API key, when auth is on.
    pub api_key: Option<String>,
    /// Extra host names requests may name (see [`crate::guard`]), lowercase.
    pub allowed_hosts: Vec<String>,
    /// Origins allowed to call the API from a browser, lowercase, no trailing slash.
    pub allowed_origins: Vec<String>,
    /// Whether unknown request fields are refused.
    pub strict: bool,
    /// Whether `/metrics` is served without the API key.
    pub metrics_public: bool,
    /// How long finished jobs are kept.
    pub job_retention: Duration,
    /// Most finished jobs kept at once.
    pub max_finished_jobs: usize,
    /// Most bytes finished jobs may hold together.
    pub max_retained_bytes: u64,
    /// Interval of the hive heartbeats.
    pub heartbeat_interval: Duration,
    /// Interval of keep-alive comments on idle streams.
    pub sse_keep_alive: Duration,
    /// Largest request body in bytes.
    pub max_body_bytes: u64,
    /// Largest width or height.
    pub max_size: u32,
    /// Largest input picture or mask, in pixels.
    pub max_input_pixels: u64,
    /// Whether SIGTERM lets the running job finish.
    pub drain_on_shutdown: bool,
    /// How prompts are read when a job does not say.
    pub prompt_syntax: PromptSyntax,
    /// How long jobs may take to end after SIGTERM.
    pub shutdown_timeout: Duration,
    /// The connections' deadlines and caps.
    pub connections: ConnectionLimits,
    /// Where finished images are saved, when they are.
    pub output_dir: Option<std::path::PathBuf>,
    /// Where jobs' LoRAs come from, if anywhere.
    pub lora_dir: Option<LoraDir>,
    /// The byte budget of the engine's parsed-LoRA cache.
    pub lora_cache_bytes: usize,
    /// The shared queue, when jobs go through Redis.
    pub redis: Option<RedisConfig>,
    /// The textual-inversion embeddings prompts may name, if any.
    pub embeddings: Option<EmbeddingsDir>,
}

/// Deadlines and caps on connections and streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a request head may take from its first byte.
    pub header_timeout: Duration,
    /// How long a request body may take to arrive.
    pub body_timeout: Duration,
    /// How long a connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Most event streams open at once.
    pub max_streams: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS as usize,
            max_streams: DEFAULT_MAX_STREAMS as usize,
        }
    }
}

impl WorkerConfig {
    /// A configuration with every default, serving `model` on 127.0.0.1, port 0.
    pub fn new(model: impl Into<String>) -> Self {
        let model = model.into();
        Self {
            worker_id: default_worker_id(),
            preset: presets::in_force(None, &model),
            model,
            model_flags: ModelFlags::default(),
            host: DEFAULT_HOST,
            port: 0,
            public_url: None,
            callback_url: None,
            backend: Backend::Cpu,
            device: DEFAULT_DEVICE,
            precision: Precision::default(),
            batch_budget: BatchBudget::DEFAULT,
            decoding: DecodingArgs::default(),
            max_queue: DEFAULT_MAX_QUEUE as usize,
            api_key: None,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            strict: false,
            metrics_public: false,
            job_retention: DEFAULT_JOB_RETENTION,
            max_finished_jobs: DEFAULT_MAX_FINISHED_JOBS,
            max_retained_bytes: DEFAULT_MAX_RETAINED_BYTES,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            sse_keep_alive: DEFAULT_SSE_KEEP_ALIVE,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_size: DEFAULT_MAX_SIZE,
            max_input_pixels: DEFAULT_MAX_INPUT_PIXELS,
            drain_on_shutdown: false,
            prompt_syntax: DEFAULT_PROMPT_SYNTAX,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            connections: ConnectionLimits::default(),
            output_dir: None,
            lora_dir: None,
            lora_cache_bytes: DEFAULT_LORA_CACHE_MIB << 20,
            redis: None,
            embeddings: None,
        }
    }

    /// Validates the serve flags of a binary built for `backend`.
    pub fn from_args(args: &ServeArgs, backend: Backend) -> Result<Self, ConfigError> {
        let model = args
            .model
            .clone()
            .or_else(|| args.sd_version.map(|p| p.repo.to_string()))
            .ok_or(ConfigError::NoModel)?;
        for (flag, value) in [
            ("callback-url", &args.callback_url),
            ("public-url", &args.public_url),
        ] {
            if let Some(value) = value {
                if !(value.starts_with("http://") || value.starts_with("https://")) {
                    return Err(ConfigError::BadUrl {
                        flag,
                        value: value.clone(),
                    });
                }
            }
        }
        args.model_flags.request(&model, WeightVariant::Full)?;
        let mut config = WorkerConfig::new(model);
        config.model_flags = args.model_flags.clone();
        config.preset = presets::in_force(args.sd_version, &config.model);
        if let Some(id) = &args.worker_id {
            config.worker_id = id.clone();
        }
        config.host = args.host;
        config.port = args.port;
        config.public_url = args.public_url.clone();
        config.callback_url = args.callback_url.clone();
        config.backend = backend;
        config.device = args.device;
        config.precision = args.precision.resolve(backend)?;
        config.batch_budget = BatchBudget::mib(args.batch_memory_mib);
        args.decoding.check()?;
        config.decoding = args.decoding.clone();
        config.max_queue = args.max_queue as usize;
        config.api_key = args.api_key.clone().filter(|k| !k.is_empty());
        config.allowed_hosts = args
            .allowed_hosts
            .iter()
            .map(|host| host.trim().to_ascii_lowercase())
            .filter(|host| !host.is_empty())
            .collect();
        config.allowed_origins = args
            .allowed_origins
            .iter()
            .map(|origin| parse_origin(origin))
            .filter(|origin| !matches!(origin, Ok(o) if o.is_empty()))
            .collect::<Result<_, _>>()?;
        config.strict = args.strict;
        config.metrics_public = args.metrics_public;
        config.job_retention = args.job_retention.into();
        config.max_finished_jobs = args.max_finished_jobs;
        config.max_retained_bytes = args.max_retained_bytes;
        config.heartbeat_interval =
            Duration::from(args.heartbeat_interval).max(Duration::from_millis(10));
        config.sse_keep_alive = Duration::from(args.sse_keep_alive).max(Duration::from_millis(10));
        config.max_body_bytes = args.max_body_bytes;
        config.max_size = args.max_size.max(MIN_SIZE);
        config.max_input_pixels = args.max_input_pixels;
        config.drain_on_shutdown = args.drain_on_shutdown;
        config.prompt_syntax = args.prompt_syntax;
        config.shutdown_timeout = args.shutdown_timeout.into();
        let at_least = |d: humantime::Duration| Duration::from(d).max(Duration::from_millis(10));
        config.connections = ConnectionLimits {
            header_timeout: at_least(args.header_timeout),
            body_timeout: at_least(args.body_timeout),
            idle_timeout: at_least(args.idle_timeout),
            max_connections: args.max_connections as usize,
            max_streams: args.max_streams as usize,
        };
        config.output_dir = args.output_dir.clone();
        config.lora_dir = args
            .lora_dir
            .as_deref()
            .map(LoraDir::open)
            .transpose()
            .map_err(ConfigError::BadLoraDir)?;
        config.lora_cache_bytes = args.lora_cache_mib.saturating_mul(1 << 20);
        config.redis = RedisConfig::from_args(&args.redis);
        if let Some(redis) = &config.redis {
            redis::Client::open(redis.url.as_str()).map_err(|e| ConfigError::BadRedisUrl {
                url: redis.redacted_url(),
                reason: e.to_string(),
            })?;
        }
        config.embeddings = args
            .embeddings_dir
            .as_deref()
            .map(EmbeddingsDir::open)
            .transpose()
            .map_err(ConfigError::BadEmbeddingsDir)?;
        Ok(config)
    }
}

/// An `--allowed-origins` entry as browsers send it in `Origin`: lowercase,
/// `scheme://host[:port]`, no trailing slash; `*` stays `*`.
fn parse_origin(value: &str) -> Result<String, ConfigError> {
    let origin = value.trim().trim_end_matches('/').to_ascii_lowercase();
    if origin.is_empty() || origin == "*" {
        return Ok(origin);
    }
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    match authority {
        Some(authority) if !authority.is_empty() && !authority.contains(['/', '?', '#', '@']) => {
            Ok(origin)
        }
        _ => Err(ConfigError::BadOrigin(value.to_string())),
    }
}

/// `HOSTNAME-PID`, so a job's `worker_id` leads to a machine and a process;
/// `sd-worker-` and random hex digits where the host name cannot be read.
fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty());
    match host {
        Some(host) => format!("{host}-{}", std::process::id()),
        None => format!("sd-worker-{:08x}", rand::random::<u32>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_default_to_the_configuration_defaults() {
        #[derive(clap::Parser)]
        struct Command {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let args = <Command as clap::Parser>::parse_from(["sd-worker", "--model", "m"]).serve;
        assert_eq!(args.port, DEFAULT_PORT);
        let mut from_flags = WorkerConfig::from_args(&args, Backend::Cpu).unwrap();
        let defaults = WorkerConfig::new("m");
        from_flags.worker_id.clone_from(&defaults.worker_id);
        from_flags.port = defaults.port;
        assert_eq!(format!("{from_flags:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn host_and_origin_lists_are_normalised_and_bad_origins_refused() {
        #[derive(clap::Parser)]
        struct Command {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let parse = |line: &[&str]| {
            let args = <Command as clap::Parser>::parse_from(line).serve;
            WorkerConfig::from_args(&args, Backend::Cpu)
        };
        let config = parse(&[
            "sd-worker",
            "--model",
            "m",
            "--allowed-hosts",
            "GPU-7.lan, .corp",
            "--allowed-origins",
            "https://App.example.com/,http://127.0.0.1:5173",
            "--strict",
        ])
        .unwrap();
        assert_eq!(config.allowed_hosts, ["gpu-7.lan", ".corp"]);
        assert_eq!(
            config.allowed_origins,
            ["https://app.example.com", "http://127.0.0.1:5173"]
        );
        assert!(config.strict);
        for bad in ["app.example.com", "https://app.example.com/path", "ftp://x"] {
            let error = parse(&["sd-worker", "--model", "m", "--allowed-origins", bad]);
            assert!(matches!(error, Err(ConfigError::BadOrigin(_))), "{bad}");
        }
    }

    #[test]
    fn a_device_that_cannot_open_is_named_once() {
        assert!(Backend::Cpu.open_device(3).unwrap().is_cpu());
        if cfg!(feature = "metal") {
            return;
        }
        let message = Backend::Metal.open_device(1).unwrap_err().to_string();
        assert!(message.starts_with("opening metal device 1: "), "{message}");
        assert_eq!(message.matches("opening").count(), 1, "{message}");
    }
}
