import { describe, expect, it, vi } from "vitest";
import {
  ApiError,
  JobCancelledError,
  JobFailedError,
  NetworkError,
  SdWorkerClient,
  StreamError,
  imageBytes,
  imageDataUrl,
  resultImages,
  type JobEvent,
  type ProgressPreview,
} from "../src/index.js";
import { json, jobEvents, mockFetch, sse, stream } from "./helpers.js";

async function collect(iterable: AsyncIterable<JobEvent>): Promise<JobEvent[]> {
  const out: JobEvent[] = [];
  for await (const event of iterable) out.push(event);
  return out;
}

const fast = { reconnectDelayMs: 1 };

describe("requests", () => {
  it("submits an image_generation operation with the API key", async () => {
    const { fetch, calls } = mockFetch(() => json({ job_id: "job-1", sse_url: "/v1/jobs/job-1/stream" }, 202));
    const client = new SdWorkerClient({ baseUrl: "http://w:1/", apiKey: "k", fetch });
    const created = await client.submit({ prompt: "a cat", steps: 4 });
    expect(created.job_id).toBe("job-1");
    expect(calls[0]).toMatchObject({
      url: "http://w:1/v1/jobs",
      method: "POST",
      body: { operation: "image_generation", prompt: "a cat", steps: 4 },
      headers: { authorization: "Bearer k", "content-type": "application/json" },
    });
  });

  it("asks a key function on every request and sends none when it has none", async () => {
    let key: string | null = null;
    const { fetch, calls } = mockFetch(
      () => json({ status: "ok" }),
      () => json({ status: "ok" }),
    );
    const client = new SdWorkerClient({ fetch, apiKey: () => key });
    await client.health();
    key = "later";
    await client.health();
    expect(calls[0]!.headers.authorization).toBeUndefined();
    expect(calls[1]!.headers.authorization).toBe("Bearer later");
    expect(calls[0]!.url).toBe("/health");
  });

  it("gets status, cancels, lists jobs and reads info at their paths", async () => {
    const { fetch, calls } = mockFetch(
      () => json({ job_id: "a/b", state: "running" }),
      () => json({ job_id: "a/b", state: "cancelled" }, 200),
      () => json({ jobs: [{ job_id: "a/b", state: "cancelled" }] }),
      () => json({ worker_id: "w", schedulers: ["ddim"] }),
    );
    const client = new SdWorkerClient({ fetch });
    expect((await client.status("a/b")).state).toBe("running");
    expect((await client.cancel("a/b")).state).toBe("cancelled");
    expect((await client.jobs()).jobs.map((j) => j.job_id)).toEqual(["a/b"]);
    expect((await client.info()).worker_id).toBe("w");
    expect(calls.map((c) => `${c.method} ${c.url}`)).toEqual([
      "GET /v1/jobs/a%2Fb",
      "DELETE /v1/jobs/a%2Fb",
      "GET /v1/jobs",
      "GET /v1/info",
    ]);
  });

  it("resolves /ready for 503 as not ready", async () => {
    const { fetch } = mockFetch(() => json({ ready: false, state: "loading", reason: "loading" }, 503));
    const ready = await new SdWorkerClient({ fetch }).ready();
    expect(ready).toEqual({ ready: false, state: "loading", reason: "loading" });
  });

  it("turns JSON error bodies into ApiError with code, field and Retry-After", async () => {
    const { fetch } = mockFetch(
      () => json({ error: { code: "invalid_request", field: "steps", message: "steps must be 1..=150, got 0" } }, 400),
      () => json({ error: { code: "queue_full", field: null, message: "queue is full" } }, 503, { "retry-after": "2" }),
      () => new Response("<html>bad gateway</html>", { status: 502, statusText: "Bad Gateway" }),
    );
    const client = new SdWorkerClient({ fetch });
    const bad = await client.submit({ prompt: "x", steps: 0 }).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(ApiError);
    expect(bad).toMatchObject({ status: 400, code: "invalid_request", field: "steps", message: "steps must be 1..=150, got 0" });
    const full = await client.submit({ prompt: "x" }).catch((e: unknown) => e);
    expect(full).toMatchObject({ status: 503, code: "queue_full", retryAfter: 2, field: null });
    const proxy = await client.info().catch((e: unknown) => e);
    expect(proxy).toMatchObject({ status: 502, code: "http_error", message: "HTTP 502 Bad Gateway: <html>bad gateway</html>" });
  });

  it("wraps a failed connection in NetworkError naming the URL", async () => {
    const client = new SdWorkerClient({
      baseUrl: "http://127.0.0.1:9",
      fetch: async () => {
        throw new TypeError("fetch failed");
      },
    });
    const error = await client.info().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NetworkError);
    expect((error as Error).message).toBe("could not reach the worker at http://127.0.0.1:9/v1/info: fetch failed");
  });

  it("decodes images", () => {
    const result = { image: "iVBORw0KGgo=", format: "png" as const };
    expect(Array.from(imageBytes(result))).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    expect(imageDataUrl(result)).toBe("data:image/png;base64,iVBORw0KGgo=");
  });

  it("lists a result's images: the result itself for one, its `images` for several", () => {
    const timings = { queued_ms: 0, generation_ms: 1, total_ms: 1 };
    const one = { image: "AAAA", format: "png" as const, seed: 5, width: 8, height: 8, timings };
    expect(resultImages(one)).toEqual([{ index: 0, ...one }]);
    const images = [0, 1].map((index) => ({ ...one, index, seed: 5 + index, image: `IMG${index}` }));
    expect(resultImages({ ...one, images }).map((i) => i.seed)).toEqual([5, 6]);
  });
});

describe("stream", () => {
  it("yields typed events up to the terminal one and sends the key", async () => {
    const events = jobEvents(2);
    const { fetch, calls } = mockFetch(() =>
      stream([": keep-alive\n\n", ...events.map((e, i) => sse(e, i)), "data: [DONE]\n\n"]),
    );
    const client = new SdWorkerClient({ fetch, apiKey: "k" });
    const got = await collect(client.stream("job-1"));
    expect(got).toEqual(events);
    expect(calls[0]).toMatchObject({
      url: "/v1/jobs/job-1/stream",
      headers: { accept: "text/event-stream", authorization: "Bearer k" },
    });
    expect(calls[0]!.headers["last-event-id"]).toBeUndefined();
  });

  it("resumes with Last-Event-ID and skips a replayed log (server ignores the header)", async () => {
    const events = jobEvents(3);
    const { fetch, calls } = mockFetch(
      () => stream(events.slice(0, 3).map((e, i) => sse(e, i))),
      () => stream(events.map((e, i) => sse(e, i))),
    );
    const onReconnect = vi.fn();
    const got = await collect(new SdWorkerClient({ fetch }).stream("j", { ...fast, onReconnect }));
    expect(got).toEqual(events);
    expect(calls[1]!.headers["last-event-id"]).toBe("2");
    expect(onReconnect).toHaveBeenCalledTimes(1);
  });

  it("resumes where a server that honours Last-Event-ID restarts", async () => {
    const events = jobEvents(3);
    const { fetch } = mockFetch(
      () => stream(events.slice(0, 2).map((e, i) => sse(e, i))),
      (call) => {
        const from = Number(call.headers["last-event-id"]) + 1;
        return stream(events.slice(from).map((e, i) => sse(e, from + i)));
      },
    );
    expect(await collect(new SdWorkerClient({ fetch }).stream("j", fast))).toEqual(events);
  });

  it("dedupes by position when the server sends no ids", async () => {
    const events = jobEvents(3);
    const { fetch, calls } = mockFetch(
      () => stream(events.slice(0, 4).map((e) => sse(e))),
      () => stream(events.slice(0, 1).map((e) => sse(e))),
      () => stream(events.map((e) => sse(e))),
    );
    expect(await collect(new SdWorkerClient({ fetch }).stream("j", fast))).toEqual(events);
    expect(calls[1]!.headers["last-event-id"]).toBeUndefined();
  });

  it("reconnects after a network error and a 5xx, and gives up after maxReconnects", async () => {
    const events = jobEvents(1);
    const down = () => {
      throw new TypeError("fetch failed");
    };
    const unavailable = () => json({ error: { code: "internal", field: null, message: "boom" } }, 500);
    const ok = mockFetch(down, unavailable, () => stream(events.map((e, i) => sse(e, i))));
    expect(await collect(new SdWorkerClient({ fetch: ok.fetch }).stream("j", fast))).toEqual(events);

    const bad = mockFetch(down, down, down);
    const error = await collect(new SdWorkerClient({ fetch: bad.fetch }).stream("j", { ...fast, maxReconnects: 2 })).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(StreamError);
    expect((error as StreamError).attempts).toBe(2);
    expect((error as Error).message).toContain("could not reach the worker");
  });

  it("stops at once on 401 and 404", async () => {
    const { fetch, calls } = mockFetch(() =>
      json({ error: { code: "not_found", field: null, message: "no job j" } }, 404),
    );
    const error = await collect(new SdWorkerClient({ fetch }).stream("j", fast)).catch((e: unknown) => e);
    expect(error).toMatchObject({ status: 404, code: "not_found", message: "no job j" });
    expect(calls).toHaveLength(1);
  });

  it("reconnects a stalled stream after the idle timeout", async () => {
    const events = jobEvents(1);
    const { fetch, calls } = mockFetch(
      (_, signal) => stream([sse(events[0]!, 0)], { hang: true, signal }),
      () => stream(events.map((e, i) => sse(e, i))),
    );
    const got = await collect(new SdWorkerClient({ fetch }).stream("j", { ...fast, idleTimeoutMs: 30 }));
    expect(got).toEqual(events);
    expect(calls[1]!.headers["last-event-id"]).toBe("0");
  });

  it("stops when the caller aborts", async () => {
    const controller = new AbortController();
    const { fetch } = mockFetch((_, signal) => stream([sse(jobEvents(1)[0]!, 0)], { hang: true, signal }));
    const seen: JobEvent[] = [];
    const run = (async () => {
      for await (const event of new SdWorkerClient({ fetch }).stream("j", { signal: controller.signal })) {
        seen.push(event);
        controller.abort(new Error("user left"));
      }
    })();
    await expect(run).rejects.toThrow("user left");
    expect(seen.map((e) => e.type)).toEqual(["queued"]);
  });
});

describe("generate", () => {
  it("submits, reports events and resolves with the image and params", async () => {
    const events = jobEvents(2);
    const { fetch } = mockFetch(
      () => json({ job_id: "j", sse_url: "/v1/jobs/j/stream" }, 202),
      () => stream(events.map((e, i) => sse(e, i))),
    );
    const seen: string[] = [];
    const onSubmitted = vi.fn();
    const outcome = await new SdWorkerClient({ fetch }).generate(
      { prompt: "a cat" },
      { onEvent: (e) => seen.push(e.type), onSubmitted },
    );
    expect(onSubmitted).toHaveBeenCalledWith({ job_id: "j", sse_url: "/v1/jobs/j/stream" });
    expect(seen).toEqual(["queued", "started", "progress", "progress", "complete"]);
    expect(outcome.jobId).toBe("j");
    expect(outcome.params?.seed).toBe(42);
    expect(outcome.result.width).toBe(64);
  });

  it("asks for live previews and hands them over with the progress events", async () => {
    const preview = { data_url: "data:image/png;base64,iVBORw0KGgo=", width: 96, height: 64 };
    const events: JobEvent[] = jobEvents(2).map((e) => (e.type === "progress" && e.step === 1 ? { ...e, preview } : e));
    const { fetch, calls } = mockFetch(
      () => json({ job_id: "j", sse_url: "/v1/jobs/j/stream" }, 202),
      () => stream(events.map((e, i) => sse(e, i))),
    );
    const previews: Array<ProgressPreview | null> = [];
    await new SdWorkerClient({ fetch }).generate(
      { prompt: "a cat", preview: true },
      { onEvent: (e) => e.type === "progress" && previews.push(e.preview ?? null) },
    );
    expect(calls[0]?.body).toMatchObject({ operation: "image_generation", prompt: "a cat", preview: true });
    expect(previews).toEqual([preview, null]);
  });

  it("sends an image operation as given", async () => {
    const events = jobEvents(1);
    const { fetch, calls } = mockFetch(
      () => json({ job_id: "j", sse_url: "/v1/jobs/j/stream" }, 202),
      () => stream(events.map((e, i) => sse(e, i))),
    );
    const request = { operation: "image_inpaint" as const, prompt: "a cat", init_image: "AAAA", mask_image: "BBBB", strength: 1 };
    const outcome = await new SdWorkerClient({ fetch }).generate(request);
    expect(calls[0]!.body).toEqual(request);
    expect(outcome.jobId).toBe("j");
  });

  it("rejects with JobFailedError and JobCancelledError", async () => {
    const failed = mockFetch(
      () => json({ job_id: "j", sse_url: "" }, 202),
      () => stream([sse({ type: "error", code: "generation_failed", field: null, message: "out of memory" }, 0), "data: [ERROR] out of memory\n\n"]),
    );
    const error = await new SdWorkerClient({ fetch: failed.fetch }).generate({ prompt: "x" }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(JobFailedError);
    expect((error as JobFailedError).detail.code).toBe("generation_failed");

    const cancelled = mockFetch(
      () => json({ job_id: "j", sse_url: "" }, 202),
      () => stream([sse({ type: "cancelled", reason: "client" }, 0)]),
    );
    const stop = await new SdWorkerClient({ fetch: cancelled.fetch }).generate({ prompt: "x" }).catch((e: unknown) => e);
    expect(stop).toBeInstanceOf(JobCancelledError);
    expect((stop as JobCancelledError).reason).toBe("client");
  });
});
