/** A job's live status: its stream folded into a view, with elapsed time. */
import { useEffect, useMemo, useState } from "react";
import type { JobEvent } from "@sd-worker/sdk";
import { isFinished, viewOf, type JobView } from "./jobView";
import { useSSEStream } from "./useSSEStream";

/** What {@link useJobStatus} returns. */
export interface JobStatusState extends JobView {
  /** Milliseconds since `since` (until the job ended). */
  elapsedMs: number;
  /** The stream failed for good; the job's outcome is unknown. */
  streamError: unknown;
  /** Reconnections made so far. */
  reconnects: number;
}

/**
 * Follows job `jobId` and returns its phase, step counter, percentage,
 * result or error, and the time elapsed since `since` (a `Date.now()` value,
 * normally the submission), ticking every `tickMs` while the job runs. A
 * new `attempt` follows the stream again from the start.
 */
export function useJobStatus(
  jobId: string | null,
  since: number | null,
  options: { onEvent?: (event: JobEvent) => void; tickMs?: number; attempt?: number } = {},
): JobStatusState {
  const stream = useSSEStream(jobId, { onEvent: options.onEvent, attempt: options.attempt });
  const view = useMemo(() => viewOf(stream.events), [stream.events]);
  const active = jobId !== null && !isFinished(view.phase) && !stream.error;
  const [now, setNow] = useState(() => Date.now());
  const [endedAt, setEndedAt] = useState<number | null>(null);
  const tickMs = options.tickMs ?? 100;

  useEffect(() => {
    setEndedAt(null);
    setNow(Date.now());
  }, [jobId]);

  useEffect(() => {
    if (!active) {
      if (jobId !== null) setEndedAt((t) => t ?? Date.now());
      return undefined;
    }
    const timer = setInterval(() => setNow(Date.now()), tickMs);
    return () => clearInterval(timer);
  }, [active, jobId, tickMs]);

  const end = active ? now : (endedAt ?? now);
  return {
    ...view,
    elapsedMs: since === null ? 0 : Math.max(0, end - since),
    streamError: stream.error,
    reconnects: stream.reconnects,
  };
}
