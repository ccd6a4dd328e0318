/** `/v1/info`, polled while the model loads, and whether an API key is needed. */
import { useCallback, useEffect, useState } from "react";
import { ApiError, type WorkerInfo } from "@sd-worker/sdk";
import { useClient } from "../client";

/** What {@link useWorkerInfo} returns. */
export interface WorkerInfoState {
  info: WorkerInfo | null;
  /** The worker answered 401: an API key is needed (or the one saved is wrong). */
  needsKey: boolean;
  /** Why the last attempt failed, other than a 401. */
  error: unknown;
  /** Asks again (after saving a key, say). */
  reload: () => void;
}

/** Loads the worker's info, again every `pollMs` until its model is ready. */
export function useWorkerInfo(pollMs = 2000): WorkerInfoState {
  const client = useClient();
  const [info, setInfo] = useState<WorkerInfo | null>(null);
  const [needsKey, setNeedsKey] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [attempt, setAttempt] = useState(0);
  const reload = useCallback(() => setAttempt((n) => n + 1), []);

  useEffect(() => {
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const load = async () => {
      try {
        const next = await client.info(controller.signal);
        setInfo(next);
        setNeedsKey(false);
        setError(null);
        if (!next.ready) timer = setTimeout(load, pollMs);
      } catch (e) {
        if (controller.signal.aborted) return;
        if (e instanceof ApiError && e.status === 401) {
          setNeedsKey(true);
          setError(null);
          return;
        }
        setError(e);
        timer = setTimeout(load, pollMs);
      }
    };
    void load();
    return () => {
      controller.abort();
      clearTimeout(timer);
    };
  }, [client, attempt, pollMs]);

  return { info, needsKey, error, reload };
}
