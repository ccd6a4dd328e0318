/** Submits jobs (text to image, image to image, inpainting), follows the current one, and cancels it. */
import { useCallback, useEffect, useRef, useState } from "react";
import {
  ApiError,
  resultImages,
  type ImageGenerationRequest,
  type ImageResult,
  type JobParams,
  type JobRequest,
} from "@sd-worker/sdk";
import { useClient } from "../client";
import { isFinished } from "./jobView";
import { useJobStatus, type JobStatusState } from "./useJobStatus";

/** A finished image with what made it. */
export interface GalleryEntry {
  jobId: string;
  /** Its place in a job of several images (from 0); absent for a job of one. */
  index?: number;
  /** The job's parameters, with this image's seed. */
  params: JobParams;
  /** This image alone (no `images` list). */
  result: ImageResult;
  /** The operation that made it; `image_generation` when absent. */
  operation?: JobRequest["operation"];
  /** When it finished (`Date.now()`). */
  finishedAt: number;
}

/** What tells gallery entries apart: the job id, and the image's index in a batch. */
export function entryKey(entry: Pick<GalleryEntry, "jobId" | "index">): string {
  return entry.index === undefined ? entry.jobId : `${entry.jobId}#${entry.index}`;
}

/**
 * A finished job's gallery entries, one per image in order, each with its
 * own seed in `params`.
 */
export function entriesOf(
  jobId: string,
  params: JobParams,
  result: ImageResult,
  operation: JobRequest["operation"],
  finishedAt: number,
): GalleryEntry[] {
  const images = resultImages(result);
  if (images.length <= 1) return [{ jobId, params, result, operation, finishedAt }];
  return images.map(({ index, ...image }) => ({
    jobId,
    index,
    params: { ...params, seed: image.seed },
    result: image,
    operation,
    finishedAt,
  }));
}

/** A job this browser submitted, as remembered across reloads. */
export interface OwnJob {
  jobId: string;
  operation: JobRequest["operation"];
  /** When it was submitted (`Date.now()`). */
  submittedAt: number;
  /** Its images went to the gallery already. */
  reported?: boolean;
}

/** The localStorage key of this browser's current and waiting jobs. */
export const JOBS_STORAGE = "sd-worker.jobs";

interface OwnJobs {
  /** The job followed now. */
  current: OwnJob | null;
  /** Submitted while another ran, in order: each is followed when the one before ends. */
  waiting: OwnJob[];
}

function loadJobs(): OwnJobs {
  try {
    const parsed = JSON.parse(localStorage.getItem(JOBS_STORAGE) ?? "null") as OwnJobs | null;
    if (parsed && typeof parsed === "object" && Array.isArray(parsed.waiting)) return parsed;
  } catch {
    // Unreadable: start afresh.
  }
  return { current: null, waiting: [] };
}

function saveJobs(jobs: OwnJobs): void {
  try {
    if (!jobs.current && jobs.waiting.length === 0) localStorage.removeItem(JOBS_STORAGE);
    else localStorage.setItem(JOBS_STORAGE, JSON.stringify(jobs));
  } catch {
    // Storage can be disabled: the jobs are then followed until the page closes.
  }
}

/** What {@link useImageGeneration} returns. */
export interface ImageGeneration {
  /** Submits a job: followed at once when none is, else after the ones before it. Resolves with its id, or null when the worker refused it. */
  generate: (request: ImageGenerationRequest | JobRequest) => Promise<string | null>;
  /** Asks the worker to cancel the current job. */
  cancel: () => Promise<void>;
  /** The current job's id. */
  jobId: string | null;
  /** The jobs submitted after the current one, not yet followed. */
  waiting: OwnJob[];
  /** The current job's live status. */
  job: JobStatusState;
  /** A submission is on its way. */
  submitting: boolean;
  /** A cancellation was asked for and the job has not ended yet. */
  cancelling: boolean;
  /** Submitting or the current job is queued or running. */
  busy: boolean;
  /** Why the last submission or cancellation failed (an {@link ApiError} when the worker answered). */
  requestError: unknown;
  /** Forgets the last request error. */
  clearError: () => void;
  /** Follows the current job's stream again (after the worker came back). */
  resume: () => void;
}

/**
 * The generation workflow: `generate` submits, the returned `job` follows the
 * stream, `cancel` stops it, and `onComplete` gets each finished image once
 * (those of a job of several last one first, so that a gallery that puts the
 * newest first shows them in order). The current job and those waiting are
 * kept in localStorage, so a reload follows them again (the worker replays
 * a job's events to a new stream).
 */
export function useImageGeneration(options: { onComplete?: (entry: GalleryEntry) => void } = {}): ImageGeneration {
  const client = useClient();
  const [jobs, setJobs] = useState<OwnJobs>(loadJobs);
  const [submitting, setSubmitting] = useState(false);
  const [cancelling, setCancelling] = useState(false);
  const [requestError, setRequestError] = useState<unknown>(null);
  const [attempt, setAttempt] = useState(0);
  const current = jobs.current;
  const jobId = current?.jobId ?? null;
  const job = useJobStatus(jobId, current?.submittedAt ?? null, { attempt });
  const onComplete = useRef(options.onComplete);
  onComplete.current = options.onComplete;
  const reported = useRef<string | null>(null);
  const running = jobId !== null && !isFinished(job.phase) && !job.streamError;
  const jobIdRef = useRef(jobId);
  jobIdRef.current = jobId;
  const runningRef = useRef(running);
  runningRef.current = running;

  useEffect(() => saveJobs(jobs), [jobs]);

  useEffect(() => {
    const fresh = current && !current.reported && reported.current !== current.jobId;
    if (current && fresh && job.phase === "completed" && job.result && job.params) {
      reported.current = current.jobId;
      const id = current.jobId;
      setJobs((j) => (j.current?.jobId === id ? { ...j, current: { ...j.current, reported: true } } : j));
      const entries = entriesOf(current.jobId, job.params, job.result, current.operation, Date.now());
      for (const entry of entries.reverse()) onComplete.current?.(entry);
    }
    if (isFinished(job.phase)) {
      setCancelling(false);
      // The next waiting job is followed as this one ends.
      setJobs((j) => (j.current?.jobId === jobId && j.waiting.length > 0 ? { current: j.waiting[0]!, waiting: j.waiting.slice(1) } : j));
    }
  }, [current, jobId, job.phase, job.result, job.params]);

  // A job the worker no longer knows (it restarted, or forgot it) is let go.
  useEffect(() => {
    if (job.streamError instanceof ApiError && job.streamError.status === 404) {
      setJobs((j) => (j.current?.jobId === jobId ? { current: j.waiting[0] ?? null, waiting: j.waiting.slice(1) } : j));
    }
  }, [job.streamError, jobId]);

  const generate = useCallback(
    async (request: ImageGenerationRequest | JobRequest) => {
      setSubmitting(true);
      setRequestError(null);
      try {
        const created = await client.submit(request);
        const own: OwnJob = {
          jobId: created.job_id,
          operation: "operation" in request ? request.operation : "image_generation",
          submittedAt: Date.now(),
        };
        setJobs((j) => {
          const following = j.current !== null && j.current.jobId === jobIdRef.current && runningRef.current;
          if (following) return { current: j.current, waiting: [...j.waiting, own] };
          setCancelling(false);
          return { current: own, waiting: j.waiting };
        });
        return created.job_id;
      } catch (error) {
        setRequestError(error);
        return null;
      } finally {
        setSubmitting(false);
      }
    },
    [client],
  );

  const cancel = useCallback(async () => {
    if (!jobId) return;
    setCancelling(true);
    try {
      await client.cancel(jobId);
    } catch (error) {
      setCancelling(false);
      if (!(error instanceof ApiError && error.code === "job_finished")) setRequestError(error);
    }
  }, [client, jobId]);

  const clearError = useCallback(() => setRequestError(null), []);
  const resume = useCallback(() => setAttempt((n) => n + 1), []);
  return {
    generate,
    cancel,
    jobId,
    waiting: jobs.waiting,
    job,
    submitting,
    cancelling: cancelling && running,
    busy: submitting || running,
    requestError,
    clearError,
    resume,
  };
}
