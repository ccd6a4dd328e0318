/** The errors the client throws. */
import type { CancelReason, ErrorCode, ErrorDetail } from "./types.js";

/**
 * The worker answered with an error status. `code`, `field` and `message`
 * come from its JSON error body (`{"error":{"code","field","message"}}`);
 * when the body is not in that format (a proxy's page, say), `code` is
 * `"http_error"` and `message` says what came back.
 */
export class ApiError extends Error {
  override readonly name = "ApiError";
  /** The HTTP status. */
  readonly status: number;
  /** The worker's error code, or `"http_error"` for a body in another format. */
  readonly code: ErrorCode | "http_error";
  /** The request field at fault, when the worker named one. */
  readonly field: string | null;
  /** Seconds to wait before retrying, from a `Retry-After` header. */
  readonly retryAfter: number | null;

  constructor(
    status: number,
    code: ErrorCode | "http_error",
    message: string,
    field: string | null = null,
    retryAfter: number | null = null,
  ) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
    this.retryAfter = retryAfter;
  }

  /** Reads an error response; never throws. */
  static async fromResponse(response: Response): Promise<ApiError> {
    const retryAfter = parseRetryAfter(response.headers.get("retry-after"));
    let text = "";
    try {
      text = await response.text();
    } catch {
      text = "";
    }
    const detail = parseErrorBody(text);
    if (detail) {
      return new ApiError(response.status, detail.code, detail.message, detail.field ?? null, retryAfter);
    }
    const status = `${response.status}${response.statusText ? ` ${response.statusText}` : ""}`;
    const snippet = text.trim().slice(0, 200);
    const message = snippet ? `HTTP ${status}: ${snippet}` : `HTTP ${status}`;
    return new ApiError(response.status, "http_error", message, null, retryAfter);
  }
}

/** The worker could not be reached (connection refused, DNS, CORS, ...). */
export class NetworkError extends Error {
  override readonly name = "NetworkError";
  /** The URL that could not be fetched. */
  readonly url: string;

  constructor(url: string, cause: unknown) {
    super(`could not reach the worker at ${url}: ${describe(cause)}`, { cause });
    this.url = url;
  }
}

/** A job's stream broke and could not be resumed within the allowed attempts. */
export class StreamError extends Error {
  override readonly name = "StreamError";
  /** The job whose stream broke. */
  readonly jobId: string;
  /** How many reconnections were tried. */
  readonly attempts: number;

  constructor(jobId: string, attempts: number, cause: unknown) {
    super(
      `lost the event stream of job ${jobId} after ${attempts} reconnection attempt(s): ${describe(cause)}`,
      { cause },
    );
    this.jobId = jobId;
    this.attempts = attempts;
  }
}

/** A job ended with an `error` event. */
export class JobFailedError extends Error {
  override readonly name = "JobFailedError";
  /** The job that failed. */
  readonly jobId: string;
  /** The worker's error. */
  readonly detail: ErrorDetail;

  constructor(jobId: string, detail: ErrorDetail) {
    super(detail.message);
    this.jobId = jobId;
    this.detail = detail;
  }
}

/** A job ended with a `cancelled` event. */
export class JobCancelledError extends Error {
  override readonly name = "JobCancelledError";
  /** The job that was cancelled. */
  readonly jobId: string;
  /** Who cancelled it. */
  readonly reason: CancelReason;

  constructor(jobId: string, reason: CancelReason) {
    super(reason === "shutdown" ? "the worker shut down before the job finished" : "the job was cancelled");
    this.jobId = jobId;
    this.reason = reason;
  }
}

/** The `{"error": {...}}` body in `text`, if it is one. */
export function parseErrorBody(text: string): ErrorDetail | undefined {
  try {
    const body: unknown = JSON.parse(text);
    if (typeof body !== "object" || body === null || !("error" in body)) return undefined;
    const error = (body as { error: unknown }).error;
    if (typeof error !== "object" || error === null) return undefined;
    const { code, field, message } = error as Record<string, unknown>;
    if (typeof code !== "string" || typeof message !== "string") return undefined;
    return {
      code: code as ErrorCode,
      field: typeof field === "string" ? field : null,
      message,
    };
  } catch {
    return undefined;
  }
}

function parseRetryAfter(value: string | null): number | null {
  if (value === null) return null;
  const seconds = Number(value.trim());
  return Number.isFinite(seconds) && seconds >= 0 ? seconds : null;
}

/** A short description of a thrown value. */
export function describe(error: unknown): string {
  if (error instanceof Error) {
    const cause = error.cause instanceof Error ? ` (${error.cause.message})` : "";
    return `${error.message}${cause}`;
  }
  return String(error);
}
