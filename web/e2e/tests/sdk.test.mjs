// The SDK, as built for Node (web/sdk/dist), against the real worker.
import assert from "node:assert/strict";
import { test } from "node:test";
import { ApiError, JobCancelledError, SdWorkerClient, encodeImage, imageBytes, imageInfo } from "@sd-worker/sdk";
import { workerFromEnv } from "./browser.mjs";
import { png } from "./png.mjs";

const worker = workerFromEnv();
const client = new SdWorkerClient({ baseUrl: worker.url, apiKey: worker.apiKey });

test("without the key the worker answers 401 as an ApiError; health needs none", async () => {
  const anonymous = new SdWorkerClient({ baseUrl: worker.url });
  await assert.rejects(anonymous.info(), (error) => error instanceof ApiError && error.status === 401 && error.code === "unauthorized");
  assert.equal((await anonymous.health()).status, "ok");
  assert.equal((await anonymous.ready()).ready, true);
});

test("info lists defaults, limits and schedulers", async () => {
  const info = await client.info();
  assert.equal(info.ready, true);
  assert.ok(info.defaults);
  assert.ok(info.schedulers.includes("euler_a"));
  assert.equal(info.limits.max_steps, 150);
});

test("generate streams typed events in order and returns a PNG of the requested size", async () => {
  const events = [];
  const outcome = await client.generate(
    { prompt: "a small test image", steps: 4, width: 64, height: 96, seed: 1234 },
    { onEvent: (event) => events.push(event) },
  );
  const types = events.map((e) => e.type);
  // One progress event per UNet pass, counted in the steps asked for: PNDM (PLMS)
  // makes one pass more than `steps`, and reports one step twice.
  const progress = events.filter((e) => e.type === "progress");
  assert.ok(progress.every((e) => e.total === 4), `totals ${progress.map((e) => e.total)}`);
  assert.deepEqual(types, ["queued", "started", ...progress.map(() => "progress"), "complete"]);
  const steps = progress.map((e) => e.step);
  assert.ok(progress.length === 4 || progress.length === 5, `${progress.length} progress events`);
  assert.deepEqual([...new Set(steps)], [1, 2, 3, 4]);
  assert.deepEqual(steps, [...steps].sort((a, b) => a - b));
  assert.equal(progress.at(-1).percent, 100);
  assert.equal(outcome.params.seed, 1234);
  assert.equal(outcome.result.seed, 1234);
  const png = imageBytes(outcome.result);
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const view = new DataView(png.buffer, png.byteOffset);
  assert.deepEqual([view.getUint32(16), view.getUint32(20)], [64, 96]);

  // A late subscriber gets the whole log; the status has the same image.
  const again = [];
  for await (const event of client.stream(outcome.jobId)) again.push(event.type);
  assert.deepEqual(again, types);
  const status = await client.status(outcome.jobId);
  assert.equal(status.state, "completed");
  assert.equal(status.result.image, outcome.result.image);
});

test("a stream resumed with Last-Event-ID yields nothing twice", async () => {
  // Long enough to be running when the flaky stream below connects: a finished
  // job's log could arrive in one chunk, with nothing left to reconnect for.
  const { job_id } = await client.submit({ prompt: "resume", steps: 30, width: 64, height: 64 });
  const first = [];
  for await (const event of client.stream(job_id)) {
    first.push(event.type);
    if (first.length === 2) break;
  }
  // A custom fetch drops the first connection after two events, forcing a reconnect.
  let connections = 0;
  const flaky = new SdWorkerClient({
    baseUrl: worker.url,
    apiKey: worker.apiKey,
    fetch: async (input, init) => {
      const response = await fetch(input, init);
      if (!String(input).endsWith("/stream") || connections++ > 0) return response;
      const reader = response.body.getReader();
      let sent = 0;
      const body = new ReadableStream({
        async pull(controller) {
          const { done, value } = await reader.read();
          const text = done ? "" : new TextDecoder().decode(value);
          sent += (text.match(/\n\n/g) ?? []).length;
          if (done || sent >= 2) {
            if (!done) controller.enqueue(value);
            await reader.cancel();
            controller.close();
          } else controller.enqueue(value);
        },
      });
      return new Response(body, { status: response.status, headers: response.headers });
    },
  });
  const resumed = [];
  for await (const event of flaky.stream(job_id, { reconnectDelayMs: 10 })) resumed.push(event.type);
  assert.ok(connections >= 2, "the stream was not reconnected");
  assert.deepEqual(resumed.slice(0, 2), ["queued", "started"]);
  assert.equal(resumed.at(-1), "complete");
  assert.ok(resumed.slice(2, -1).every((t) => t === "progress") && resumed.length >= 6, resumed.join(","));
  const direct = [];
  for await (const event of client.stream(job_id)) direct.push(event.type);
  assert.deepEqual(resumed, direct);
});

test("cancel ends a long job with a cancelled event", async () => {
  const { job_id } = await client.submit({ prompt: "long", steps: 150 });
  const stream = client.stream(job_id);
  const types = [];
  for await (const event of stream) {
    types.push(event.type);
    if (event.type === "queued") await client.cancel(job_id);
  }
  assert.equal(types.at(-1), "cancelled");
  await assert.rejects(client.cancel(job_id), (error) => error instanceof ApiError && error.code === "job_finished");
  await assert.rejects(
    client.generate({ prompt: "x", steps: 150 }, { onSubmitted: ({ job_id: id }) => void client.cancel(id) }),
    (error) => error instanceof JobCancelledError && error.reason === "client",
  );
});

test("validation errors name the field", async () => {
  await assert.rejects(
    client.submit({ prompt: "x", width: 100 }),
    (error) => error instanceof ApiError && error.status === 400 && error.field === "width" && /multiple of 8/.test(error.message),
  );
  await assert.rejects(client.status("job-does-not-exist"), (error) => error instanceof ApiError && error.status === 404);
});

test("image to image from a picture encoded by the SDK", async () => {
  const picture = await encodeImage(new Blob([png(96, 64, (x, y) => [x * 2, y * 4, 90])], { type: "image/png" }));
  assert.deepEqual([picture.width, picture.height], [96, 64]);
  const { result, params } = await client.generate({
    operation: "image_transform",
    prompt: "a harbour",
    input_image: picture.base64,
    strength: 0.5,
    steps: 4,
    seed: 5,
  });
  assert.equal(params?.strength, 0.5);
  assert.deepEqual(imageInfo(imageBytes(result)), { format: "png", mime: "image/png", width: 96, height: 64 });
});
