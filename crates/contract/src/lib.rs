//! Wire types of the sd-worker API.
//!
//! Everything a client sends or receives is declared here, with serde and OpenAPI
//! schemas, so the worker, its tests and the generated TypeScript SDK share one
//! source of truth. This crate holds no tensors and no HTTP code.
//!
//! - [`a1111`]: the AUTOMATIC1111 web UI API subset (`/sdapi/v1/...`).
//! - [`request`]: the rbee operation body of `POST /v1/jobs`, tagged by `operation`.
//! - [`limits`]: the bounds on a request's fields that hold for every worker.
//! - [`job`]: the answer to a submission, a job's status and its finished image.
//! - [`event`]: the events of a job's server-sent event stream and its end markers.
//! - [`error`]: the one error body every failing route answers with.
//! - [`info`]: `/health`, `/ready` and `/v1/info`.
//! - [`openai`]: the OpenAI Images API's requests, answers and errors.
//! - [`hive`]: the callbacks the worker sends to an rbee hive or queen.
//! - [`whole`]: whole numbers written as `480` or `480.0`, as JSON Schema counts them.
#![deny(missing_docs)]

pub mod a1111;
pub mod error;
pub mod event;
pub mod hive;
pub mod info;
pub mod job;
pub mod limits;
pub mod openai;
pub mod request;
pub mod scheduler;
pub mod whole;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use event::{completion_markers, JobEvent, ProgressPreview, StreamMessage};
pub use hive::{HeartbeatWorker, WorkerHeartbeat, WorkerReady, WorkerStatus};
pub use info::{
    ComputeInfo, EmbeddingDirectory, EmbeddingInfo, EmbeddingList, GenerationDefaults, Health,
    JobCounts, Limits, LoraDirectory, LoraInfo, LoraList, Readiness, ReadinessState,
    SkippedEmbeddingInfo, WorkerInfo,
};
pub use job::{
    BatchImage, ImageFormat, ImageResult, JobCreated, JobList, JobParams, JobState, JobStatus,
    JobSummary, Timings, MAX_LISTED_FINISHED, MAX_LISTED_QUEUED,
};
pub use openai::{
    OpenAiEditFields, OpenAiError, OpenAiErrorBody, OpenAiImage, OpenAiImageEditForm,
    OpenAiImageRequest, OpenAiImagesResponse, OpenAiModel, OpenAiModelList, OpenAiResponseFormat,
};
pub use request::{
    GenerationFields, ImageGenerationRequest, ImageInpaintRequest, ImageTransformRequest,
    JobRequest, LoraConfig, PromptSyntax,
};
pub use scheduler::SchedulerKind;
