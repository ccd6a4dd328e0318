/** A job's events folded into what the progress display needs. */
import type { BatchImage, ErrorDetail, ImageResult, JobEvent, JobParams, ProgressPreview } from "@sd-worker/sdk";

/** Where a followed job is, as the page shows it. */
export type JobPhase = "connecting" | "queued" | "running" | "completed" | "failed" | "cancelled";

/** A job's progress as the page shows it. */
export interface JobView {
  phase: JobPhase;
  /** Position in the queue while queued (1 = next). */
  queuePosition: number | null;
  /** Steps done (0 before the first), counted over all the job's images. */
  step: number;
  /** Steps in all (one image's times the number of images), once started. */
  total: number | null;
  /** 0..100. */
  percent: number;
  /** The newest live preview (jobs sent with `preview: true`), kept until the next one. */
  preview: ProgressPreview | null;
  /** The parameters the job runs with, once started. */
  params: JobParams | null;
  /** The images of a job of several finished so far (`image` events). */
  images: BatchImage[];
  /** The image (all of them, in `images`, for a job of several), once completed. */
  result: ImageResult | null;
  /** Why it failed. */
  error: ErrorDetail | null;
  /** Who cancelled it. */
  cancelledBy: "client" | "shutdown" | null;
}

/** A job nothing has been heard of yet. */
export const CONNECTING: JobView = {
  phase: "connecting",
  queuePosition: null,
  step: 0,
  total: null,
  percent: 0,
  preview: null,
  params: null,
  images: [],
  result: null,
  error: null,
  cancelledBy: null,
};

/** Folds one event into the view. */
export function applyEvent(view: JobView, event: JobEvent): JobView {
  switch (event.type) {
    case "queued":
      return { ...view, phase: "queued", queuePosition: event.position };
    case "started":
      return {
        ...view,
        phase: "running",
        queuePosition: null,
        params: event.params,
        total: event.params.steps * (event.params.num_images ?? 1),
      };
    case "restarted":
      // Another worker of a shared queue runs the job again from its first step.
      return { ...view, phase: "running", step: 0, percent: 0, preview: null, images: [] };
    case "progress":
      return {
        ...view,
        phase: "running",
        step: event.step,
        total: event.total,
        percent: event.percent,
        preview: event.preview ?? view.preview,
      };
    case "image": {
      const { type: _type, ...image } = event;
      return { ...view, images: [...view.images, image] };
    }
    case "complete": {
      const { type: _type, ...result } = event;
      return { ...view, phase: "completed", percent: 100, step: view.total ?? view.step, result };
    }
    case "error": {
      const { type: _type, ...detail } = event;
      return { ...view, phase: "failed", error: detail };
    }
    case "cancelled":
      return { ...view, phase: "cancelled", cancelledBy: event.reason };
    default:
      return view;
  }
}

/** Folds a whole event list. */
export function viewOf(events: JobEvent[]): JobView {
  return events.reduce(applyEvent, CONNECTING);
}

/**
 * Which image of a job of several is being made (1-based), and how many it
 * makes; null for a job of one image or before it started.
 */
export function currentImage(view: JobView): { index: number; count: number } | null {
  const count = view.params?.num_images ?? 1;
  if (count <= 1 || !view.total) return null;
  const perImage = Math.max(1, Math.round(view.total / count));
  const index = Math.min(count, Math.max(1, Math.ceil(view.step / perImage)));
  return { index, count };
}

/** Whether the job has ended. */
export function isFinished(phase: JobPhase): boolean {
  return phase === "completed" || phase === "failed" || phase === "cancelled";
}
