/** The sd-worker HTTP client. */
import { ApiError, JobCancelledError, JobFailedError, NetworkError, StreamError } from "./errors.js";
import { readSse } from "./sse.js";
import {
  isTerminalEvent,
  type BatchImage,
  type EmbeddingList,
  type Health,
  type ImageGenerationRequest,
  type ImageResult,
  type JobCreated,
  type JobEvent,
  type JobList,
  type JobParams,
  type JobRequest,
  type JobStatus,
  type LoraList,
  type Readiness,
  type WorkerInfo,
} from "./types.js";

/** How a {@link SdWorkerClient} reaches the worker. */
export interface ClientOptions {
  /**
   * The worker's origin, e.g. `http://127.0.0.1:8080`. Empty (the default)
   * makes every URL relative, which suits a page the worker serves itself.
   */
  baseUrl?: string;
  /** The API key sent as `Authorization: Bearer <key>`; a function is asked on every request. */
  apiKey?: string | null | (() => string | null | undefined);
  /** The `fetch` to use; the global one by default. */
  fetch?: typeof fetch;
}

/** How {@link SdWorkerClient.stream} follows a job. */
export interface StreamOptions {
  /** Stops following (the generator then throws the signal's reason). */
  signal?: AbortSignal;
  /** Reconnections tried in a row without receiving an event before giving up; 5 by default. */
  maxReconnects?: number;
  /** Delay before the first reconnection in ms, doubled on each failure up to 5 s; 500 by default. */
  reconnectDelayMs?: number;
  /**
   * Reconnects when nothing at all (not even a keep-alive comment) arrives for
   * this many ms; 45 000 by default (the worker sends keep-alives every 15 s);
   * 0 turns it off.
   */
  idleTimeoutMs?: number;
  /** Told before each reconnection, with the attempt number (from 1) and what broke. */
  onReconnect?: (attempt: number, error: unknown) => void;
}

/** What {@link SdWorkerClient.generate} resolves with. */
export interface GenerationOutcome {
  /** The job's id. */
  jobId: string;
  /** The parameters it ran with (seed included), from its `started` event. */
  params: JobParams | null;
  /** The finished image. */
  result: ImageResult;
}

/** Options of {@link SdWorkerClient.generate}. */
export interface GenerateOptions extends StreamOptions {
  /** Told about every event of the job, the terminal one included. */
  onEvent?: (event: JobEvent) => void;
  /** Told the job's id as soon as it is accepted (before any event). */
  onSubmitted?: (created: JobCreated) => void;
}

const MAX_RECONNECT_DELAY_MS = 5000;

/**
 * A typed client for the sd-worker API. Works in browsers and in Node 20+
 * (both have `fetch` and web streams). Streams are read with `fetch`, not
 * `EventSource`, so they carry the API key too.
 */
export class SdWorkerClient {
  private readonly baseUrl: string;
  private readonly fetchImpl: typeof fetch;
  private apiKey: ClientOptions["apiKey"];

  constructor(options: ClientOptions = {}) {
    this.baseUrl = (options.baseUrl ?? "").replace(/\/+$/, "");
    const fetchImpl = options.fetch ?? globalThis.fetch;
    if (typeof fetchImpl !== "function") {
      throw new TypeError("no fetch implementation: pass options.fetch (Node 18+ and browsers have one)");
    }
    this.fetchImpl = fetchImpl.bind(globalThis);
    this.apiKey = options.apiKey;
  }

  /** Replaces the API key (a string, a function asked per request, or none). */
  setApiKey(apiKey: ClientOptions["apiKey"]): void {
    this.apiKey = apiKey;
  }

  /** The absolute (or, without a base URL, relative) URL of an API path. */
  url(path: string): string {
    return `${this.baseUrl}${path}`;
  }

  /** `GET /health`: the process is up. */
  health(signal?: AbortSignal): Promise<Health> {
    return this.json<Health>("GET", "/health", undefined, signal);
  }

  /** `GET /ready`: whether the model is loaded. Resolves for 503 too (with `ready: false`). */
  async ready(signal?: AbortSignal): Promise<Readiness> {
    const response = await this.send("GET", "/ready", undefined, signal);
    if (response.ok || response.status === 503) {
      const body = (await response.json()) as Readiness;
      return body;
    }
    throw await ApiError.fromResponse(response);
  }

  /** `GET /v1/info`: the model, defaults, limits, schedulers and queue. */
  info(signal?: AbortSignal): Promise<WorkerInfo> {
    return this.json<WorkerInfo>("GET", "/v1/info", undefined, signal);
  }

  /** `GET /v1/loras`: the LoRA adapters jobs may name (empty without a LoRA directory). */
  loras(signal?: AbortSignal): Promise<LoraList> {
    return this.json<LoraList>("GET", "/v1/loras", undefined, signal);
  }

  /** `GET /v1/embeddings`: the textual-inversion embeddings prompts may name, and the files skipped. */
  embeddings(signal?: AbortSignal): Promise<EmbeddingList> {
    return this.json<EmbeddingList>("GET", "/v1/embeddings", undefined, signal);
  }

  /**
   * `POST /v1/jobs`. A request without `operation` is sent as an
   * `image_generation` operation.
   */
  submit(request: ImageGenerationRequest | JobRequest, signal?: AbortSignal): Promise<JobCreated> {
    const body: JobRequest =
      "operation" in request ? request : { ...request, operation: "image_generation" };
    return this.json<JobCreated>("POST", "/v1/jobs", body, signal);
  }

  /**
   * `GET /v1/jobs`: the running job, the queue in order and the newest
   * finished jobs, each with its state and parameters (no images).
   */
  jobs(signal?: AbortSignal): Promise<JobList> {
    return this.json<JobList>("GET", "/v1/jobs", undefined, signal);
  }

  /** `GET /v1/jobs/{id}`: the job's state, progress and result. */
  status(jobId: string, signal?: AbortSignal): Promise<JobStatus> {
    return this.json<JobStatus>("GET", jobPath(jobId), undefined, signal);
  }

  /**
   * `DELETE /v1/jobs/{id}`: cancels a queued job at once and a running one
   * within a denoising step. Rejects with an {@link ApiError} whose code is
   * `job_finished` when the job had already ended.
   */
  cancel(jobId: string, signal?: AbortSignal): Promise<JobStatus> {
    return this.json<JobStatus>("DELETE", jobPath(jobId), undefined, signal);
  }

  /**
   * Follows a job's events (`GET /v1/jobs/{id}/stream`) until its terminal
   * event, which is the last one yielded. A dropped connection is resumed
   * with `Last-Event-ID`; every event is yielded exactly once and in order,
   * whether or not the server honours that header (the worker replays a
   * job's whole log to a new subscriber; events already yielded are skipped
   * by their SSE id, or by their position when the server sends no ids).
   * Error answers (401, 404) end the generator with an {@link ApiError}.
   */
  async *stream(jobId: string, options: StreamOptions = {}): AsyncGenerator<JobEvent, void, undefined> {
    const maxReconnects = options.maxReconnects ?? 5;
    const baseDelay = options.reconnectDelayMs ?? 500;
    const idleTimeoutMs = options.idleTimeoutMs ?? 45_000;
    const signal = options.signal;
    let nextIndex = 0;
    let lastId: string | undefined;
    let failures = 0;
    let serverRetry: number | undefined;
    for (;;) {
      signal?.throwIfAborted();
      const connection = new Connection(signal, idleTimeoutMs);
      let broke: unknown;
      try {
        const headers: Record<string, string> = { accept: "text/event-stream" };
        if (lastId !== undefined) headers["last-event-id"] = lastId;
        connection.touch();
        const response = await this.send("GET", `${jobPath(jobId)}/stream`, undefined, connection.signal, headers);
        if (!response.ok) {
          const error = await ApiError.fromResponse(response);
          if (response.status < 500) throw error;
          broke = error;
        } else if (!response.body) {
          broke = new Error("the stream response has no body");
        } else {
          connection.touch();
          let position = 0;
          for await (const message of readSse(response.body, () => connection.touch())) {
            if (message.retry !== undefined) serverRetry = message.retry;
            if (!message.data.startsWith("{")) continue;
            const index = message.id !== undefined && /^\d+$/.test(message.id) ? Number(message.id) : position;
            position = index + 1;
            if (index < nextIndex) continue;
            const event = parseEvent(message.data, jobId);
            nextIndex = index + 1;
            if (message.id !== undefined) lastId = message.id;
            failures = 0;
            yield event;
            if (isTerminalEvent(event)) return;
          }
          broke = new Error("the stream ended before the job's terminal event");
        }
      } catch (error) {
        if (signal?.aborted) throw signal.reason;
        if (error instanceof ApiError || error instanceof SyntaxError) throw error;
        broke = connection.idle ? new Error(`no data for ${idleTimeoutMs} ms`) : error;
      } finally {
        connection.close();
      }
      failures++;
      if (failures > maxReconnects) throw new StreamError(jobId, failures - 1, broke);
      options.onReconnect?.(failures, broke);
      const delay = Math.min((serverRetry ?? baseDelay) * 2 ** (failures - 1), MAX_RECONNECT_DELAY_MS);
      await sleep(delay, signal);
    }
  }

  /**
   * Submits a job (text to image when `operation` is absent) and follows it to the end. Resolves with the
   * image; rejects with {@link JobFailedError}, {@link JobCancelledError},
   * {@link ApiError}, {@link NetworkError} or {@link StreamError}.
   */
  async generate(request: ImageGenerationRequest | JobRequest, options: GenerateOptions = {}): Promise<GenerationOutcome> {
    const created = await this.submit(request, options.signal);
    options.onSubmitted?.(created);
    let params: JobParams | null = null;
    for await (const event of this.stream(created.job_id, options)) {
      options.onEvent?.(event);
      switch (event.type) {
        case "started":
          params = event.params;
          break;
        case "complete":
          return { jobId: created.job_id, params, result: event };
        case "error":
          throw new JobFailedError(created.job_id, event);
        case "cancelled":
          throw new JobCancelledError(created.job_id, event.reason);
        default:
          break;
      }
    }
    throw new StreamError(created.job_id, 0, new Error("the stream ended without a terminal event"));
  }

  private async json<T>(method: string, path: string, body: unknown, signal?: AbortSignal): Promise<T> {
    const response = await this.send(method, path, body, signal);
    if (!response.ok) throw await ApiError.fromResponse(response);
    return (await response.json()) as T;
  }

  private async send(
    method: string,
    path: string,
    body: unknown,
    signal?: AbortSignal,
    extraHeaders: Record<string, string> = {},
  ): Promise<Response> {
    const headers: Record<string, string> = { accept: "application/json", ...extraHeaders };
    const key = typeof this.apiKey === "function" ? this.apiKey() : this.apiKey;
    if (key) headers.authorization = `Bearer ${key}`;
    const init: RequestInit = { method, headers, signal };
    if (body !== undefined) {
      headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const url = this.url(path);
    try {
      return await this.fetchImpl(url, init);
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      throw new NetworkError(url, error);
    }
  }
}

/** Decodes a finished image's base64 data into bytes. */
export function imageBytes(result: Pick<ImageResult, "image">): Uint8Array {
  const binary = atob(result.image);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** A `data:` URL of a finished image, for an `<img src>` or a download link. */
export function imageDataUrl(result: Pick<ImageResult, "image" | "format">): string {
  return `data:image/${result.format};base64,${result.image}`;
}

/**
 * Every image of a result, in order: its `images` for a job of several, else
 * the result itself as image 0 (a job of one image has no `images`).
 */
export function resultImages(result: ImageResult): BatchImage[] {
  if (result.images && result.images.length > 0) return result.images;
  const { image, format, seed, width, height, timings } = result;
  return [{ index: 0, image, format, seed, width, height, timings }];
}

function jobPath(jobId: string): string {
  return `/v1/jobs/${encodeURIComponent(jobId)}`;
}

function parseEvent(data: string, jobId: string): JobEvent {
  let event: unknown;
  try {
    event = JSON.parse(data);
  } catch {
    throw new SyntaxError(`job ${jobId}: an event's data is not JSON: ${data.slice(0, 200)}`);
  }
  if (typeof event !== "object" || event === null || typeof (event as { type?: unknown }).type !== "string") {
    throw new SyntaxError(`job ${jobId}: an event has no "type": ${data.slice(0, 200)}`);
  }
  return event as JobEvent;
}

/** One stream connection: its abort controller, linked to the caller's signal, and its idle timer. */
class Connection {
  private readonly controller = new AbortController();
  private readonly unlink: () => void;
  private timer: ReturnType<typeof setTimeout> | undefined;
  /** Whether the idle timer fired. */
  idle = false;

  constructor(
    outer: AbortSignal | undefined,
    private readonly idleTimeoutMs: number,
  ) {
    const onAbort = () => this.controller.abort(outer?.reason);
    if (outer?.aborted) onAbort();
    outer?.addEventListener("abort", onAbort, { once: true });
    this.unlink = () => outer?.removeEventListener("abort", onAbort);
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Restarts the idle timer. */
  touch(): void {
    if (this.idleTimeoutMs <= 0) return;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.idle = true;
      this.controller.abort(new Error("idle"));
    }, this.idleTimeoutMs);
  }

  close(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.unlink();
    this.controller.abort();
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
