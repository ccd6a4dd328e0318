/** A job's events folded into what the progress display needs. */
import type { ErrorDetail, ImageResult, JobEvent, JobParams, ProgressPreview } from "@sd-worker/sdk";

/** Where a followed job is, as the page shows it. */
export type JobPhase = "connecting" | "queued" | "running" | "completed" | "failed" | "cancelled";

/** A job's progress as the page shows it. */
export interface JobView {
  phase: JobPhase;
  /** Position in the queue while queued (1 = next). */
  queuePosition: number | null;
  /** Steps done (0 before the first). */
  step: number;
  /** Steps in all, once started. */
  total: number | null;
  /** 0..100. */
  percent: number;
  /** The newest live preview (jobs sent with `preview: true`), kept until the next one. */
  preview: ProgressPreview | null;
  /** The parameters the job runs with, once started. */
  params: JobParams | null;
  /** The image, once completed. */
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
      return { ...view, phase: "running", queuePosition: null, params: event.params, total: event.params.steps };
    case "progress":
      return {
        ...view,
        phase: "running",
        step: event.step,
        total: event.total,
        percent: event.percent,
        preview: event.preview ?? view.preview,
      };
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

/** Whether the job has ended. */
export function isFinished(phase: JobPhase): boolean {
  return phase === "completed" || phase === "failed" || phase === "cancelled";
}
