/** A scriptable stand-in for the worker, behind the real SDK client's fetch. */
import {
  SdWorkerClient,
  base64ToBytes,
  type EmbeddingInfo,
  type ImageGenerationRequest,
  type JobEvent,
  type LoraInfo,
  type WorkerInfo,
} from "@sd-worker/sdk";

/** A 1×1 PNG. */
export const PNG_1x1 =
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

/** The bytes of a PNG whose header says `width`×`height` (the pixels are the 1×1 PNG's: only headers are read here). */
export function pngBytes(width: number, height: number): Uint8Array<ArrayBuffer> {
  const bytes = base64ToBytes(PNG_1x1);
  const view = new DataView(bytes.buffer);
  view.setUint32(16, width);
  view.setUint32(20, height);
  return bytes;
}

/** A PNG file of a given header size, as a file input or a drop gives it. */
export function pngFile(name: string, width: number, height: number): File {
  return new File([pngBytes(width, height)], name, { type: "image/png" });
}

/** A submitted body: any operation's fields. */
export type SubmittedBody = ImageGenerationRequest & {
  operation?: string;
  input_image?: string;
  init_image?: string;
  mask_image?: string;
  strength?: number | null;
};

export const INFO: WorkerInfo = {
  worker_id: "w1",
  version: "0.1.0",
  model: "fixtures/tiny-sd15",
  preset: null,
  family: "sd1",
  backend: "cpu",
  device: 0,
  dtype: "f32",
  ready: true,
  defaults: { width: 512, height: 512, steps: 25, guidance_scale: 7.5, scheduler: "pndm", prompt_syntax: "a1111" },
  limits: {
    min_size: 64,
    max_size: 2048,
    size_multiple: 8,
    max_prompt_chars: 4096,
    max_steps: 150,
    max_guidance_scale: 30,
    max_num_images: 8,
    max_queue: 16,
    max_body_bytes: 8388608,
    max_input_pixels: 16777216,
  },
  schedulers: ["ddim", "pndm", "euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "unipc", "lcm"],
  jobs: { queued: 0, running: 0, retained: 0 },
};

type Answer = { status: number; body: unknown; headers?: Record<string, string> };

/** The fake worker: answers info, submissions, cancels, and streams events the test emits. */
export class FakeWorker {
  info: WorkerInfo = structuredClone(INFO);
  /** The key requests must carry, if any. */
  apiKey: string | null = null;
  /** Answers for the next submissions (otherwise 202 with a new job id). */
  submitAnswers: Answer[] = [];
  /** Every submitted body. */
  submitted: SubmittedBody[] = [];
  /** Every cancelled job id. */
  cancelled: string[] = [];
  /** What `GET /v1/loras` lists. */
  loras: LoraInfo[] = [];
  /** What `GET /v1/embeddings` lists. */
  embeddings: EmbeddingInfo[] = [];
  /** Every request, as "METHOD path". */
  requests: string[] = [];
  private streams = new Map<string, ReadableStreamDefaultController<Uint8Array>>();
  private logs = new Map<string, JobEvent[]>();
  private nextJob = 1;
  private encoder = new TextEncoder();

  /** A client whose fetch is this fake. */
  client(): SdWorkerClient {
    return new SdWorkerClient({
      fetch: (input, init) => this.fetch(String(input), init ?? {}),
      apiKey: () => sessionStorage.getItem("sd-worker.apiKey"),
    });
  }

  /** Sends an event on a job's stream (and logs it for late subscribers). */
  emit(jobId: string, event: JobEvent): void {
    const log = this.logs.get(jobId) ?? [];
    log.push(event);
    this.logs.set(jobId, log);
    this.streams.get(jobId)?.enqueue(this.encoder.encode(this.message(event, log.length - 1)));
  }

  /**
   * Emits `started`, every `progress` and `complete` for a job; for a job
   * sent with `num_images` above 1, an `image` event per image, with the
   * seeds `seed`, `seed + 1`, … and steps counted over the whole batch.
   */
  run(jobId: string, steps = 2, seed = 42): void {
    const body = this.submitted[Number(jobId.replace("job-", "")) - 1] ?? { prompt: "x" };
    const count = body.num_images ?? 1;
    this.emit(jobId, {
      type: "started",
      params: {
        prompt: body.prompt,
        negative_prompt: body.negative_prompt ?? null,
        prompt_syntax: body.prompt_syntax ?? "a1111",
        steps,
        guidance_scale: body.guidance_scale ?? 7.5,
        width: body.width ?? 64,
        height: body.height ?? 64,
        seed,
        num_images: count,
        scheduler: body.scheduler ?? "pndm",
        strength: body.operation && body.operation !== "image_generation" ? (body.strength ?? 0.8) : null,
      },
    });
    const timings = { queued_ms: 0, generation_ms: 1200, total_ms: 1200 };
    const image = (index: number) => ({
      index,
      image: PNG_1x1,
      format: "png" as const,
      seed: seed + index,
      width: body.width ?? 64,
      height: body.height ?? 64,
      timings,
    });
    const total = steps * count;
    for (let step = 1; step <= total; step++) {
      this.emit(jobId, { type: "progress", step, total, percent: (100 * step) / total });
      if (count > 1 && step % steps === 0) this.emit(jobId, { type: "image", ...image(step / steps - 1) });
    }
    const { index: _index, ...first } = image(0);
    this.emit(jobId, {
      type: "complete",
      ...first,
      ...(count > 1 && { images: Array.from({ length: count }, (_, i) => image(i)) }),
    });
  }

  private message(event: JobEvent, id: number): string {
    return `event: ${event.type}\nid: ${id}\ndata: ${JSON.stringify(event)}\n\n`;
  }

  private json(answer: Answer): Response {
    return new Response(JSON.stringify(answer.body), {
      status: answer.status,
      headers: { "content-type": "application/json", ...answer.headers },
    });
  }

  private async fetch(url: string, init: RequestInit): Promise<Response> {
    const method = init.method ?? "GET";
    this.requests.push(`${method} ${url}`);
    const headers = new Headers(init.headers);
    if (url === "/health") return this.json({ status: 200, body: { status: "ok" } });
    if (this.apiKey !== null && headers.get("authorization") !== `Bearer ${this.apiKey}`) {
      return this.json({
        status: 401,
        body: { error: { code: "unauthorized", field: null, message: "missing or wrong API key" } },
      });
    }
    if (url === "/v1/info") return this.json({ status: 200, body: this.info });
    if (url === "/v1/loras") return this.json({ status: 200, body: { loras: this.loras } });
    if (url === "/v1/embeddings") return this.json({ status: 200, body: { embeddings: this.embeddings, skipped: [] } });
    if (url === "/v1/jobs" && method === "GET") return this.json({ status: 200, body: { jobs: [] } });
    if (url === "/v1/jobs" && method === "POST") {
      this.submitted.push(JSON.parse(String(init.body)) as SubmittedBody);
      const answer = this.submitAnswers.shift();
      if (answer) return this.json(answer);
      const jobId = `job-${this.nextJob++}`;
      this.logs.set(jobId, []);
      queueMicrotask(() => this.emit(jobId, { type: "queued", position: 1 }));
      return this.json({ status: 202, body: { job_id: jobId, sse_url: `/v1/jobs/${jobId}/stream` } });
    }
    const stream = url.match(/^\/v1\/jobs\/([^/]+)\/stream$/);
    if (stream) {
      const jobId = decodeURIComponent(stream[1]!);
      const from = Number(headers.get("last-event-id") ?? -1) + 1;
      const log = this.logs.get(jobId);
      if (!log) {
        return this.json({ status: 404, body: { error: { code: "not_found", field: null, message: `no job ${jobId}` } } });
      }
      const body = new ReadableStream<Uint8Array>({
        start: (controller) => {
          this.streams.set(jobId, controller);
          log.slice(from).forEach((e, i) => controller.enqueue(this.encoder.encode(this.message(e, from + i))));
          init.signal?.addEventListener("abort", () => {
            try {
              controller.error(init.signal?.reason);
            } catch {
              // closed already
            }
          });
        },
      });
      return new Response(body, { headers: { "content-type": "text/event-stream" } });
    }
    const job = url.match(/^\/v1\/jobs\/([^/]+)$/);
    if (job && method === "DELETE") {
      const jobId = decodeURIComponent(job[1]!);
      this.cancelled.push(jobId);
      queueMicrotask(() => this.emit(jobId, { type: "cancelled", reason: "client" }));
      return this.json({ status: 202, body: { job_id: jobId, state: "running", cancel_requested: true } });
    }
    return this.json({ status: 404, body: { error: { code: "not_found", field: null, message: `no route ${url}` } } });
  }
}
