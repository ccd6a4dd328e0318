import type { JobEvent } from "../src/types.js";

/** One recorded call of the mocked fetch. */
export interface Call {
  url: string;
  method: string;
  headers: Record<string, string>;
  body: unknown;
}

type Handler = (call: Call, signal: AbortSignal | undefined) => Response | Promise<Response>;

/** A fetch that answers each call with the next handler and records the calls. */
export function mockFetch(...handlers: Handler[]) {
  const calls: Call[] = [];
  const fetch = async (input: RequestInfo | URL, init: RequestInit = {}): Promise<Response> => {
    const headers: Record<string, string> = {};
    new Headers(init.headers).forEach((value, key) => (headers[key] = value));
    const call: Call = {
      url: String(input),
      method: init.method ?? "GET",
      headers,
      body: typeof init.body === "string" ? JSON.parse(init.body) : undefined,
    };
    calls.push(call);
    const handler = handlers[calls.length - 1];
    if (!handler) throw new Error(`unexpected fetch #${calls.length}: ${call.method} ${call.url}`);
    init.signal?.throwIfAborted();
    return handler(call, init.signal ?? undefined);
  };
  return { fetch: fetch as typeof globalThis.fetch, calls };
}

/** A JSON response. */
export function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

/** One SSE message for an event, as the worker writes it (with its log index as id). */
export function sse(event: JobEvent, id?: number): string {
  const idLine = id === undefined ? "" : `id: ${id}\n`;
  return `event: ${event.type}\n${idLine}data: ${JSON.stringify(event)}\n\n`;
}

/**
 * An event-stream response made of `chunks`. With `hang`, the body stays open
 * after the chunks until the request is aborted.
 */
export function stream(chunks: string[], options: { hang?: boolean; signal?: AbortSignal } = {}): Response {
  const encoder = new TextEncoder();
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(encoder.encode(chunk));
      if (!options.hang) controller.close();
      else
        options.signal?.addEventListener("abort", () => {
          try {
            controller.error(options.signal?.reason);
          } catch {
            // already closed
          }
        });
    },
  });
  return new Response(body, { headers: { "content-type": "text/event-stream" } });
}

/** The events of a short job that completes. */
export function jobEvents(steps = 3): JobEvent[] {
  const params = {
    prompt: "a cat",
    negative_prompt: null,
    prompt_syntax: "a1111" as const,
    steps,
    guidance_scale: 7.5,
    width: 64,
    height: 64,
    seed: 42,
    num_images: 1,
    scheduler: "pndm" as const,
  };
  const events: JobEvent[] = [
    { type: "queued", position: 1 },
    { type: "started", params },
  ];
  for (let step = 1; step <= steps; step++) {
    events.push({ type: "progress", step, total: steps, percent: (100 * step) / steps });
  }
  events.push({
    type: "complete",
    image: "iVBORw0KGgo=",
    format: "png",
    seed: 42,
    width: 64,
    height: 64,
    timings: { queued_ms: 1, generation_ms: 20, total_ms: 21 },
  });
  return events;
}
