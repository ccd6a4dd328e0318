/** Follows a job's server-sent events through the SDK. */
import { useEffect, useRef, useState } from "react";
import type { JobEvent, StreamOptions } from "@sd-worker/sdk";
import { useClient } from "../client";

/** What {@link useSSEStream} knows about a job's stream. */
export interface SSEStreamState {
  /** Every event received, in order, each exactly once. */
  events: JobEvent[];
  /** The terminal event has arrived. */
  done: boolean;
  /** The stream failed for good (an API error, or reconnection gave up). */
  error: unknown;
  /** Reconnections made so far. */
  reconnects: number;
}

const IDLE: SSEStreamState = { events: [], done: false, error: null, reconnects: 0 };

/**
 * Follows the events of job `jobId` (nothing when null) until its terminal
 * event, reconnecting without losing or repeating events. Switching to
 * another job, or unmounting, stops following the previous one.
 */
export function useSSEStream(
  jobId: string | null,
  options: Pick<StreamOptions, "maxReconnects" | "reconnectDelayMs" | "idleTimeoutMs"> & {
    onEvent?: (event: JobEvent) => void;
    /** A new value follows the stream again from its first event. */
    attempt?: number;
  } = {},
): SSEStreamState {
  const client = useClient();
  const [state, setState] = useState<SSEStreamState & { jobId: string | null }>({ ...IDLE, jobId });
  const onEvent = useRef(options.onEvent);
  onEvent.current = options.onEvent;
  const { maxReconnects, reconnectDelayMs, idleTimeoutMs, attempt } = options;

  useEffect(() => {
    setState({ ...IDLE, jobId });
    if (!jobId) return undefined;
    const controller = new AbortController();
    (async () => {
      try {
        const stream = client.stream(jobId, {
          signal: controller.signal,
          maxReconnects,
          reconnectDelayMs,
          idleTimeoutMs,
          onReconnect: () => setState((s) => ({ ...s, reconnects: s.reconnects + 1 })),
        });
        for await (const event of stream) {
          if (controller.signal.aborted) return;
          setState((s) => ({ ...s, events: [...s.events, event] }));
          onEvent.current?.(event);
        }
        if (!controller.signal.aborted) setState((s) => ({ ...s, done: true }));
      } catch (error) {
        if (!controller.signal.aborted) setState((s) => ({ ...s, error, done: true }));
      }
    })();
    return () => controller.abort();
  }, [client, jobId, maxReconnects, reconnectDelayMs, idleTimeoutMs, attempt]);

  return state.jobId === jobId ? state : IDLE;
}
