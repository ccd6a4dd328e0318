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

/** What {@link useImageGeneration} returns. */
export interface ImageGeneration {
  /** Submits a job (the current one, if any, keeps running on the worker but is no longer followed). */
  generate: (request: ImageGenerationRequest | JobRequest) => Promise<void>;
  /** Asks the worker to cancel the current job. */
  cancel: () => Promise<void>;
  /** The current job's id. */
  jobId: string | null;
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
}

/**
 * The generation workflow: `generate` submits, the returned `job` follows the
 * stream, `cancel` stops it, and `onComplete` gets each finished image once
 * (those of a job of several last one first, so that a gallery that puts the
 * newest first shows them in order).
 */
export function useImageGeneration(options: { onComplete?: (entry: GalleryEntry) => void } = {}): ImageGeneration {
  const client = useClient();
  const [jobId, setJobId] = useState<string | null>(null);
  const [since, setSince] = useState<number | null>(null);
  const [submitting, setSubmitting] = useState(false);
  const [cancelling, setCancelling] = useState(false);
  const [requestError, setRequestError] = useState<unknown>(null);
  const job = useJobStatus(jobId, since);
  const onComplete = useRef(options.onComplete);
  onComplete.current = options.onComplete;
  const reported = useRef<string | null>(null);
  const operation = useRef<JobRequest["operation"]>("image_generation");

  useEffect(() => {
    if (jobId && job.phase === "completed" && job.result && job.params && reported.current !== jobId) {
      reported.current = jobId;
      const entries = entriesOf(jobId, job.params, job.result, operation.current, Date.now());
      for (const entry of entries.reverse()) onComplete.current?.(entry);
    }
    if (isFinished(job.phase)) setCancelling(false);
  }, [jobId, job.phase, job.result, job.params]);

  const generate = useCallback(
    async (request: ImageGenerationRequest | JobRequest) => {
      setSubmitting(true);
      setRequestError(null);
      setCancelling(false);
      try {
        const created = await client.submit(request);
        operation.current = "operation" in request ? request.operation : "image_generation";
        setSince(Date.now());
        setJobId(created.job_id);
      } catch (error) {
        setRequestError(error);
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
  const running = jobId !== null && !isFinished(job.phase) && !job.streamError;
  return {
    generate,
    cancel,
    jobId,
    job,
    submitting,
    cancelling: cancelling && running,
    busy: submitting || running,
    requestError,
    clearError,
  };
}
