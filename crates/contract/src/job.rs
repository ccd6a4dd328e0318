//! Jobs as clients see them: the answer to a submission, a job's status and
//! its finished image.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{ErrorDetail, PromptSyntax, SchedulerKind};

/// The answer to `POST /v1/jobs` (rbee's `JobResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobCreated {
    /// The new job's id.
    pub job_id: String,
    /// Where to follow it: `/v1/jobs/{job_id}/stream`, relative to the worker.
    pub sse_url: String,
}

impl JobCreated {
    /// The answer for a job id, with its stream path.
    pub fn new(job_id: impl Into<String>) -> Self {
        let job_id = job_id.into();
        let sse_url = format!("/v1/jobs/{job_id}/stream");
        Self { job_id, sse_url }
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting in the queue.
    Queued,
    /// Being generated.
    Running,
    /// Finished with an image.
    Completed,
    /// Finished with an error.
    Failed,
    /// Stopped before it finished.
    Cancelled,
}

impl JobState {
    /// Whether the job has ended (completed, failed or cancelled).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }
}

/// The parameters a job runs with, every default filled in and the seed chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobParams {
    /// What to draw.
    pub prompt: String,
    /// What to steer away from.
    pub negative_prompt: Option<String>,
    /// How the prompts were read.
    pub prompt_syntax: PromptSyntax,
    /// How many of the text encoders' last layers the prompts skipped (0: none).
    #[serde(default)]
    pub clip_skip: u32,
    /// Denoising steps.
    pub steps: u32,
    /// Classifier-free guidance scale.
    pub guidance_scale: f64,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Seed of the initial noise of the first image; image `i` of the job
    /// (0-based) has the seed `seed + i`, wrapping past the largest seed.
    pub seed: u64,
    /// How many images the job makes.
    pub num_images: u32,
    /// Denoising scheduler.
    pub scheduler: SchedulerKind,
    /// Image-to-image and inpainting strength (absent for text to image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strength: Option<f64>,
}

/// The encoding of a finished image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImageFormat {
    /// PNG, with the generation parameters in an A1111-style `parameters` text chunk.
    Png,
}

/// How long a job took, in milliseconds. For one image of a job of several,
/// `generation_ms` and `total_ms` run until that image was encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Timings {
    /// From submission until the engine started it.
    pub queued_ms: u64,
    /// From start until the image was encoded.
    pub generation_ms: u64,
    /// From submission until the end.
    pub total_ms: u64,
}

/// A completed job's result: its image, or for a job of several images the
/// first one, with every image in `images`.
///
/// The top-level fields read as a job of one image always has: a client
/// that knows nothing of `num_images` gets the first image of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageResult {
    /// The image file (the first one, of several), base64-encoded (standard
    /// alphabet, padded).
    pub image: String,
    /// The file's encoding.
    pub format: ImageFormat,
    /// The seed that produced it.
    pub seed: u64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Time spent queued and generating, the whole job's.
    pub timings: Timings,
    /// Every image of a job that asked for more than one (`num_images`), in
    /// order, the first one included; absent for a job of one image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<BatchImage>,
}

/// One finished image of a job that makes several: the `image` event
/// announces it, and the job's result lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchImage {
    /// Its place in the job, from 0; its seed is the job's seed plus this.
    pub index: u32,
    /// The image file, base64-encoded (standard alphabet, padded).
    pub image: String,
    /// The file's encoding.
    pub format: ImageFormat,
    /// The seed that produced it.
    pub seed: u64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Time spent queued, and generating until this image was encoded.
    pub timings: Timings,
}

/// The answer to `GET /v1/jobs`: the running job, the first
/// [`MAX_LISTED_QUEUED`] of the queue in order, then the newest
/// [`MAX_LISTED_FINISHED`] finished jobs.
///
/// A listing shows each job's state and parameters, never its images or
/// error details (`GET /v1/jobs/{id}` has those).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    /// The jobs: running, then queued (next first), then finished (newest first).
    pub jobs: Vec<JobSummary>,
    /// How many jobs wait in the queue, the ones not listed included.
    pub queued: u32,
}

/// Most queued jobs a listing shows (the next ones to run).
pub const MAX_LISTED_QUEUED: usize = 100;

/// Most finished jobs a listing shows (the newest ones).
pub const MAX_LISTED_FINISHED: usize = 32;

/// One job of a [`JobList`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobSummary {
    /// The job's id.
    pub job_id: String,
    /// Where it is in its life.
    pub state: JobState,
    /// 1 for the next job to run; present while queued.
    pub queue_position: Option<u32>,
    /// The last finished denoising step, as in [`JobStatus`]; present once running.
    pub step: Option<u32>,
    /// The number of denoising steps, as in [`JobStatus`]; present once running.
    pub total: Option<u32>,
    /// Whether a cancellation was asked for and has not taken effect yet.
    pub cancel_requested: bool,
    /// Milliseconds since it was submitted.
    pub age_ms: u64,
    /// The parameters it runs with.
    pub params: JobParams,
}

/// The answer to `GET /v1/jobs/{id}` and `DELETE /v1/jobs/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobStatus {
    /// The job's id.
    pub job_id: String,
    /// Where it is in its life.
    pub state: JobState,
    /// 1 for the next job to run; present while queued.
    pub queue_position: Option<u32>,
    /// The last finished denoising step (1-based), counted over all the
    /// job's images as `progress` events count them; present once running.
    pub step: Option<u32>,
    /// The number of denoising steps, of all the job's images; present once running.
    pub total: Option<u32>,
    /// Whether a cancellation was asked for and has not taken effect yet.
    pub cancel_requested: bool,
    /// The parameters it runs with.
    pub params: JobParams,
    /// The image (every image, of several), once completed.
    pub result: Option<ImageResult>,
    /// Why it failed, once failed.
    pub error: Option<ErrorDetail>,
    /// The `--worker-id` of the worker that runs or ran it, once started
    /// (with a shared queue, any worker of the fleet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
}
