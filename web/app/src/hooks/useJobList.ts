/** The worker's jobs (`GET /v1/jobs`), asked again every few seconds while the page is visible. */
import { useCallback, useEffect, useState } from "react";
import type { JobList } from "@sd-worker/sdk";
import { useClient } from "../client";

/** What {@link useJobList} returns. */
export interface JobListState {
  /** Running, queued (next first), then the newest finished, and how many wait; null before the first answer. */
  list: JobList | null;
  /** Asks again now (after a cancel, say). */
  refresh: () => void;
}

/** Polls the job listing every `pollMs`; `enabled` false stops it (no key yet). */
export function useJobList(enabled: boolean, pollMs = 1500): JobListState {
  const client = useClient();
  const [list, setList] = useState<JobList | null>(null);
  const [tick, setTick] = useState(0);
  const refresh = useCallback(() => setTick((n) => n + 1), []);

  useEffect(() => {
    if (!enabled) return undefined;
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const load = async () => {
      try {
        if (document.visibilityState !== "hidden") setList(await client.jobs(controller.signal));
      } catch {
        // The connection badge tells when the worker is gone; keep the last listing.
      }
      if (!controller.signal.aborted) timer = setTimeout(load, pollMs);
    };
    void load();
    return () => {
      controller.abort();
      clearTimeout(timer);
    };
  }, [client, enabled, pollMs, tick]);

  return { list, refresh };
}
