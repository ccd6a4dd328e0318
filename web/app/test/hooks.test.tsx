import { act, renderHook, waitFor } from "@testing-library/react";
import type { ReactNode } from "react";
import { describe, expect, it, vi } from "vitest";
import { ClientProvider } from "../src/client";
import { applyEvent, CONNECTING, currentImage, viewOf } from "../src/hooks/jobView";
import { useImageGeneration } from "../src/hooks/useImageGeneration";
import { useJobStatus } from "../src/hooks/useJobStatus";
import { useSSEStream } from "../src/hooks/useSSEStream";
import { useWorkerInfo } from "../src/hooks/useWorkerInfo";
import { GALLERY_LIMIT, useGallery } from "../src/hooks/useGallery";
import { memoryStore } from "../src/storage/galleryStore";
import { FakeWorker, PNG_1x1 } from "./fakeWorker";

function setup() {
  const worker = new FakeWorker();
  const client = worker.client();
  const wrapper = ({ children }: { children: ReactNode }) => <ClientProvider client={client}>{children}</ClientProvider>;
  return { worker, client, wrapper };
}

describe("jobView", () => {
  it("folds events into phase, step and percent", () => {
    expect(viewOf([])).toEqual(CONNECTING);
    const queued = applyEvent(CONNECTING, { type: "queued", position: 2 });
    expect(queued).toMatchObject({ phase: "queued", queuePosition: 2 });
    const running = applyEvent(queued, { type: "progress", step: 3, total: 4, percent: 75 });
    expect(running).toMatchObject({ phase: "running", step: 3, total: 4, percent: 75 });
    const failed = applyEvent(running, { type: "error", code: "generation_failed", field: null, message: "boom" });
    expect(failed.phase).toBe("failed");
    expect(failed.error).toEqual({ code: "generation_failed", field: null, message: "boom" });
  });

  it("counts a batch's steps over all its images and collects its images", () => {
    const params = { prompt: "a", prompt_syntax: "a1111" as const, steps: 2, guidance_scale: 7.5, width: 8, height: 8, seed: 5, num_images: 3, scheduler: "pndm" as const };
    const started = applyEvent(CONNECTING, { type: "started", params });
    expect(started.total).toBe(6);
    expect(currentImage(started)).toEqual({ index: 1, count: 3 });
    const timings = { queued_ms: 0, generation_ms: 1, total_ms: 1 };
    const image = { index: 0, image: "A", format: "png" as const, seed: 5, width: 8, height: 8, timings };
    const third = [
      { type: "progress" as const, step: 2, total: 6, percent: 33.33 },
      { type: "image" as const, ...image },
      { type: "progress" as const, step: 3, total: 6, percent: 50 },
    ].reduce(applyEvent, started);
    expect(currentImage(third)).toEqual({ index: 2, count: 3 });
    expect(third.images).toEqual([image]);
    expect(currentImage(applyEvent(CONNECTING, { type: "started", params: { ...params, num_images: 1 } }))).toBeNull();
  });

  it("keeps the newest live preview until another one comes", () => {
    const preview = (n: number) => ({ data_url: `data:image/png;base64,${n}`, width: n, height: n });
    expect(CONNECTING.preview).toBeNull();
    const first = applyEvent(CONNECTING, { type: "progress", step: 1, total: 3, percent: 33.33, preview: preview(1) });
    expect(first.preview).toEqual(preview(1));
    const second = applyEvent(first, { type: "progress", step: 2, total: 3, percent: 66.67 });
    expect(second.preview).toEqual(preview(1));
    const third = applyEvent(second, { type: "progress", step: 3, total: 3, percent: 100, preview: preview(3) });
    expect(third).toMatchObject({ step: 3, preview: preview(3) });
  });

  it("starts over from step 0 when another worker restarts the job", () => {
    const halfway = applyEvent(CONNECTING, { type: "progress", step: 2, total: 4, percent: 50 });
    const restarted = applyEvent(halfway, { type: "restarted", attempt: 2, worker_id: "gpu-b" });
    expect(restarted).toMatchObject({ phase: "running", step: 0, percent: 0, total: 4 });
  });
});

describe("useSSEStream", () => {
  it("collects a job's events until the terminal one, and starts over for another job", async () => {
    const { worker, wrapper, client } = setup();
    const { job_id } = await client.submit({ prompt: "a" });
    const onEvent = vi.fn();
    const { result, rerender } = renderHook(({ id }) => useSSEStream(id, { onEvent }), {
      wrapper,
      initialProps: { id: job_id as string | null },
    });
    await waitFor(() => expect(result.current.events.map((e) => e.type)).toEqual(["queued"]));
    act(() => worker.run(job_id, 2));
    await waitFor(() => expect(result.current.done).toBe(true));
    expect(result.current.events.map((e) => e.type)).toEqual(["queued", "started", "progress", "progress", "complete"]);
    expect(onEvent).toHaveBeenCalledTimes(5);
    rerender({ id: null });
    expect(result.current.events).toEqual([]);
  });

  it("reports a stream that fails for good", async () => {
    const { wrapper } = setup();
    const { result } = renderHook(() => useSSEStream("job-unknown"), { wrapper });
    await waitFor(() => expect(result.current.error).toBeTruthy());
    expect((result.current.error as Error).message).toBe("no job job-unknown");
  });
});

describe("useJobStatus", () => {
  it("tracks steps and stops the clock when the job ends", async () => {
    const { worker, wrapper, client } = setup();
    const { job_id } = await client.submit({ prompt: "a" });
    const since = Date.now() - 1500;
    const { result } = renderHook(() => useJobStatus(job_id, since, { tickMs: 10 }), { wrapper });
    await waitFor(() => expect(result.current.phase).toBe("queued"));
    expect(result.current.elapsedMs).toBeGreaterThanOrEqual(1500);
    act(() => {
      worker.emit(job_id, { type: "started", params: { prompt: "a", negative_prompt: null, prompt_syntax: "a1111", steps: 4, guidance_scale: 7.5, width: 64, height: 64, seed: 1, num_images: 1, scheduler: "pndm" } });
      worker.emit(job_id, { type: "progress", step: 1, total: 4, percent: 25 });
    });
    await waitFor(() => expect(result.current).toMatchObject({ phase: "running", step: 1, total: 4, percent: 25 }));
    act(() => worker.emit(job_id, { type: "cancelled", reason: "client" }));
    await waitFor(() => expect(result.current.phase).toBe("cancelled"));
    const stopped = result.current.elapsedMs;
    await new Promise((r) => setTimeout(r, 50));
    expect(result.current.elapsedMs).toBe(stopped);
  });
});

describe("useImageGeneration", () => {
  it("submits, follows progress and reports the finished image once", async () => {
    const { worker, wrapper } = setup();
    const onComplete = vi.fn();
    const { result } = renderHook(() => useImageGeneration({ onComplete }), { wrapper });
    await act(() => result.current.generate({ prompt: "a fox", width: 64, height: 64 }));
    expect(worker.submitted).toEqual([{ operation: "image_generation", prompt: "a fox", width: 64, height: 64 }]);
    expect(result.current.jobId).toBe("job-1");
    expect(result.current.busy).toBe(true);
    act(() => worker.run("job-1", 3, 99));
    await waitFor(() => expect(result.current.job.phase).toBe("completed"));
    expect(result.current.busy).toBe(false);
    expect(result.current.job.percent).toBe(100);
    expect(onComplete).toHaveBeenCalledTimes(1);
    expect(onComplete.mock.calls[0]![0]).toMatchObject({ jobId: "job-1", params: { seed: 99, prompt: "a fox" }, result: { image: PNG_1x1 } });
  });

  it("submits an image operation as given and tags the finished image with it", async () => {
    const { worker, wrapper } = setup();
    const onComplete = vi.fn();
    const { result } = renderHook(() => useImageGeneration({ onComplete }), { wrapper });
    await act(() => result.current.generate({ operation: "image_transform", prompt: "sea", input_image: PNG_1x1, strength: 0.6 }));
    expect(worker.submitted).toEqual([{ operation: "image_transform", prompt: "sea", input_image: PNG_1x1, strength: 0.6 }]);
    act(() => worker.run("job-1", 1, 5));
    await waitFor(() => expect(onComplete).toHaveBeenCalledTimes(1));
    expect(onComplete.mock.calls[0]![0]).toMatchObject({ operation: "image_transform", params: { strength: 0.6 } });
  });

  it("queues a job submitted while one runs, and follows it when that one ends", async () => {
    const { worker, wrapper } = setup();
    const onComplete = vi.fn();
    const { result } = renderHook(() => useImageGeneration({ onComplete }), { wrapper });
    await act(() => result.current.generate({ prompt: "first" }));
    await waitFor(() => expect(result.current.job.phase).toBe("queued"));
    await act(() => result.current.generate({ prompt: "second" }));
    expect(result.current.jobId).toBe("job-1");
    expect(result.current.waiting.map((j) => j.jobId)).toEqual(["job-2"]);
    act(() => worker.run("job-1", 1, 1));
    await waitFor(() => expect(result.current.jobId).toBe("job-2"));
    expect(result.current.waiting).toEqual([]);
    act(() => worker.run("job-2", 1, 2));
    await waitFor(() => expect(onComplete).toHaveBeenCalledTimes(2));
  });

  it("follows its jobs again after a reload, and reports an image once", async () => {
    const { worker, wrapper } = setup();
    const onComplete = vi.fn();
    const first = renderHook(() => useImageGeneration({ onComplete }), { wrapper });
    await act(() => first.result.current.generate({ prompt: "kept" }));
    await waitFor(() => expect(first.result.current.job.phase).toBe("queued"));
    first.unmount();
    const again = renderHook(() => useImageGeneration({ onComplete }), { wrapper });
    expect(again.result.current.jobId).toBe("job-1");
    act(() => worker.run("job-1", 2, 7));
    await waitFor(() => expect(onComplete).toHaveBeenCalledTimes(1));
    again.unmount();
    const later = renderHook(() => useImageGeneration({ onComplete }), { wrapper });
    await waitFor(() => expect(later.result.current.job.phase).toBe("completed"));
    expect(onComplete).toHaveBeenCalledTimes(1);
  });

  it("cancels the current job", async () => {
    const { worker, wrapper } = setup();
    const { result } = renderHook(() => useImageGeneration(), { wrapper });
    await act(() => result.current.generate({ prompt: "slow" }));
    await waitFor(() => expect(result.current.job.phase).toBe("queued"));
    await act(() => result.current.cancel());
    expect(worker.cancelled).toEqual(["job-1"]);
    await waitFor(() => expect(result.current.job.phase).toBe("cancelled"));
    expect(result.current.cancelling).toBe(false);
    expect(result.current.busy).toBe(false);
  });

  it("keeps the worker's error for a rejected submission", async () => {
    const { worker, wrapper } = setup();
    worker.submitAnswers.push({
      status: 400,
      body: { error: { code: "invalid_request", field: "steps", message: "must be between 1 and 150, got 500" } },
    });
    const { result } = renderHook(() => useImageGeneration(), { wrapper });
    await act(() => result.current.generate({ prompt: "x", steps: 500 }));
    expect(result.current.jobId).toBeNull();
    expect(result.current.requestError).toMatchObject({ status: 400, field: "steps" });
    act(() => result.current.clearError());
    expect(result.current.requestError).toBeNull();
  });
});

describe("useWorkerInfo", () => {
  it("asks for a key on 401 and loads once one is saved", async () => {
    const { worker, wrapper } = setup();
    worker.apiKey = "s3cret";
    const { result } = renderHook(() => useWorkerInfo(), { wrapper });
    await waitFor(() => expect(result.current.needsKey).toBe(true));
    expect(result.current.info).toBeNull();
    sessionStorage.setItem("sd-worker.apiKey", "s3cret");
    act(() => result.current.reload());
    await waitFor(() => expect(result.current.info?.model).toBe("fixtures/tiny-sd15"));
    expect(result.current.needsKey).toBe(false);
  });

  it("polls until the model is ready", async () => {
    const { worker, wrapper } = setup();
    worker.info.ready = false;
    const { result } = renderHook(() => useWorkerInfo(20), { wrapper });
    await waitFor(() => expect(result.current.info?.ready).toBe(false));
    worker.info.ready = true;
    await waitFor(() => expect(result.current.info?.ready).toBe(true));
  });
});

describe("useGallery", () => {
  const entry = (n: number) => ({
    jobId: `job-${n}`,
    params: { prompt: `p${n}`, negative_prompt: null, prompt_syntax: "a1111" as const, steps: 1, guidance_scale: 1, width: 8, height: 8, seed: n, num_images: 1, scheduler: "ddim" as const },
    result: { image: PNG_1x1, format: "png" as const, seed: n, width: 8, height: 8, timings: { queued_ms: 0, generation_ms: 0, total_ms: 0 } },
    finishedAt: n,
  });

  it("keeps entries newest first in its store, which a new page reads back", async () => {
    const store = memoryStore();
    const { result } = renderHook(() => useGallery(store));
    await waitFor(() => expect(result.current.loaded).toBe(true));
    act(() => result.current.add(entry(1)));
    act(() => result.current.add(entry(2)));
    expect(result.current.entries.map((e) => e.jobId)).toEqual(["job-2", "job-1"]);
    const again = renderHook(() => useGallery(store));
    await waitFor(() => expect(again.result.current.entries.map((e) => e.jobId)).toEqual(["job-2", "job-1"]));
    act(() => result.current.clear());
    expect(result.current.entries).toEqual([]);
    expect(await store.load()).toEqual([]);
  });

  it("drops the oldest beyond its bound, from the store too", async () => {
    const store = memoryStore();
    const { result } = renderHook(() => useGallery(store));
    await waitFor(() => expect(result.current.loaded).toBe(true));
    for (let n = 1; n <= GALLERY_LIMIT + 2; n++) act(() => result.current.add(entry(n)));
    expect(result.current.entries).toHaveLength(GALLERY_LIMIT);
    expect(result.current.entries.at(-1)?.jobId).toBe("job-3");
    await waitFor(async () => expect(await store.load()).toHaveLength(GALLERY_LIMIT));
  });
});
