/** Turns whatever a request threw into a message for people. */
import { ApiError, JobCancelledError, JobFailedError, NetworkError, StreamError, type ErrorDetail } from "@sd-worker/sdk";

/** An error ready to show. */
export interface ShownError {
  /** A short headline. */
  title: string;
  /** The worker's (or the browser's) explanation. */
  message: string;
  /** The form field at fault, as the API names it. */
  field: string | null;
  /** The HTTP status, when the worker answered. */
  status: number | null;
  /** The worker's error code, when it sent one. */
  code: string | null;
}

/** A headline per error code; typed by the SDK so a new code cannot go untitled. */
const TITLES: Record<ErrorDetail["code"], string> = {
  invalid_json: "The request was not understood",
  invalid_request: "Invalid setting",
  unknown_operation: "Unknown operation",
  not_implemented: "Not supported by this worker",
  payload_too_large: "Request too large",
  unsupported_media_type: "Unsupported request",
  request_timeout: "The request took too long to arrive",
  unauthorized: "API key required",
  forbidden: "Not allowed from this page",
  not_found: "Not found",
  method_not_allowed: "Not allowed",
  job_finished: "The job has already ended",
  event_not_logged: "The job's progress could not be resumed",
  queue_full: "The queue is full",
  too_many_streams: "Too many open progress streams",
  not_ready: "The model is not loaded yet",
  shutting_down: "The worker is shutting down",
  queue_unreachable: "The shared job queue cannot be reached",
  generation_failed: "Generation failed",
  internal: "The worker hit an internal error",
};

/** The names the form shows for the API's fields. */
export const FIELD_LABELS: Record<string, string> = {
  prompt: "Prompt",
  negative_prompt: "Negative prompt",
  steps: "Steps",
  guidance_scale: "Guidance",
  width: "Width",
  height: "Height",
  seed: "Seed",
  scheduler: "Scheduler",
  input_image: "Input image",
  init_image: "Input image",
  mask_image: "Mask",
  strength: "Strength",
  num_images: "Images",
  batch_count: "Batch count",
};

/** The API fields the picture section of the form shows errors for. */
export const PICTURE_FIELDS: ReadonlySet<string> = new Set(["input_image", "init_image", "mask_image", "strength"]);

/** The error detail of a job's `error` event, ready to show. */
export function describeDetail(detail: ErrorDetail): ShownError {
  return {
    title: TITLES[detail.code] ?? "Error",
    message: detail.message,
    field: detail.field ?? null,
    status: null,
    code: detail.code,
  };
}

/** A message with job ids (`job-` and 32 hex digits) put in words: people do not read ids. */
export function withoutJobIds(message: string): string {
  return message.replace(/\b(?:the )?job[ -]?(?:`|")?job-[0-9a-f]{32}(?:`|")?/gi, "the job").replace(/job-[0-9a-f]{32}/gi, "the job");
}

/** Any thrown value, ready to show; messages name no job id and show no raw browser error. */
export function describeError(error: unknown): ShownError {
  if (error instanceof ApiError) {
    let message = error.code === "not_found" && error.status === 404 && /job/i.test(error.message)
      ? "The worker no longer has this job: it restarted, or the job ended long ago."
      : withoutJobIds(error.message);
    if (error.retryAfter !== null) message += ` Try again in ${error.retryAfter} s.`;
    return {
      title: (TITLES as Record<string, string>)[error.code] ?? `Request failed (HTTP ${error.status})`,
      message,
      field: error.field,
      status: error.status,
      code: error.code,
    };
  }
  if (error instanceof JobFailedError) return describeDetail(error.detail);
  if (error instanceof JobCancelledError) {
    return { title: "Cancelled", message: error.message, field: null, status: null, code: null };
  }
  if (error instanceof NetworkError) {
    const message = "The worker did not answer. Check that it is running; the page reconnects by itself when it is back.";
    return { title: "Cannot reach the worker", message, field: null, status: null, code: null };
  }
  if (error instanceof StreamError) {
    const message = "The connection dropped while following the job; the page follows it again when the worker is back.";
    return { title: "Lost the progress stream", message, field: null, status: null, code: null };
  }
  const message = withoutJobIds(error instanceof Error ? error.message : String(error));
  return { title: "Something went wrong", message, field: null, status: null, code: null };
}
