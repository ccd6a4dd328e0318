/**
 * Friendly names for the wire types of the sd-worker API. Every type here is
 * an alias of one in `schema.ts`, which is generated from the worker's
 * `openapi.json`; nothing is written by hand.
 */
import type { components } from "./schema.js";

type Schemas = components["schemas"];

/** The body of `POST /v1/jobs`, tagged by `operation`. */
export type JobRequest = Schemas["JobRequest"];
/**
 * The fields every operation shares (prompt, steps, guidance, size, seed,
 * scheduler, preview, ...); absent or `null` values take the worker's defaults.
 */
export type GenerationFields = Schemas["GenerationFields"];
/** Text-to-image parameters: the shared fields only. */
export type ImageGenerationRequest = Schemas["ImageGenerationRequest"];
/** Image-to-image parameters: `input_image` (base64 PNG or JPEG) and `strength`. */
export type ImageTransformRequest = Schemas["ImageTransformRequest"];
/** Inpainting parameters: `init_image`, `mask_image` (white = repaint) and `strength`. */
export type ImageInpaintRequest = Schemas["ImageInpaintRequest"];
/** A denoising scheduler name. */
export type SchedulerKind = Schemas["SchedulerKind"];
/** The answer to a submission: the job id and its stream path. */
export type JobCreated = Schemas["JobCreated"];
/** A job's state, progress and, once it ended, its image or error. */
export type JobStatus = Schemas["JobStatus"];
/** `GET /v1/jobs`: the running job, the queue, then the newest finished jobs. */
export type JobList = Schemas["JobList"];
/** One job of a {@link JobList}: its state and parameters, no image. */
export type JobSummary = Schemas["JobSummary"];
/** Where a job is in its life. */
export type JobState = Schemas["JobState"];
/** The parameters a job runs with, every default filled in and the seed chosen. */
export type JobParams = Schemas["JobParams"];
/** A finished image (base64 PNG) with its seed, size and timings. */
export type ImageResult = Schemas["ImageResult"];
/**
 * One image of a job of several (`num_images` > 1): the body of an `image`
 * event and an entry of a result's `images`.
 */
export type BatchImage = Schemas["BatchImage"];
/** How long a job took, in milliseconds. */
export type Timings = Schemas["Timings"];
/**
 * A live preview on a `progress` event of a job sent with `preview: true`: a
 * rough PNG of the image so far as a `data:` URL, usable as an `<img src>`.
 */
export type ProgressPreview = Schemas["ProgressPreview"];
/** One event of a job's stream, discriminated by `type`. */
export type JobEvent = Schemas["JobEvent"];
/** Why a job was cancelled: `client` or `shutdown`. */
export type CancelReason = Schemas["CancelReason"];
/** The body of every error response. */
export type ErrorBody = Schemas["ErrorBody"];
/** One error: its code, the request field at fault and a message for people. */
export type ErrorDetail = Schemas["ErrorDetail"];
/** What kind of failure an error reports. */
export type ErrorCode = Schemas["ErrorCode"];
/** The answer to `GET /v1/info`. */
export type WorkerInfo = Schemas["WorkerInfo"];
/** One LoRA adapter of a job: its name in the worker's LoRA directory and its strength. */
export type LoraConfig = Schemas["LoraConfig"];
/** The answer to `GET /v1/loras`. */
export type LoraList = Schemas["LoraList"];
/** One LoRA adapter a job may name. */
export type LoraInfo = Schemas["LoraInfo"];
/** The answer to `GET /v1/embeddings`. */
export type EmbeddingList = Schemas["EmbeddingList"];
/** One textual-inversion embedding a prompt may name by its trigger word. */
export type EmbeddingInfo = Schemas["EmbeddingInfo"];
/** The values a job takes for the fields it leaves out. */
export type GenerationDefaults = Schemas["GenerationDefaults"];
/** The bounds the worker enforces on requests. */
export type Limits = Schemas["Limits"];
/** The answer to `GET /health`. */
export type Health = Schemas["Health"];
/** The answer to `GET /ready`. */
export type Readiness = Schemas["Readiness"];

/** The `type` of a job event. */
export type JobEventType = JobEvent["type"];
/** The job event of one `type`. */
export type JobEventOf<T extends JobEventType> = Extract<JobEvent, { type: T }>;
/** An event that ends a job: `complete`, `error` or `cancelled`. */
export type TerminalJobEvent = JobEventOf<"complete" | "error" | "cancelled">;

/** Whether an event ends its job. */
export function isTerminalEvent(event: JobEvent): event is TerminalJobEvent {
  return event.type === "complete" || event.type === "error" || event.type === "cancelled";
}
