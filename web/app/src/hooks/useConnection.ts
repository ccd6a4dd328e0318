/** Whether the worker answers: `/health` asked every few seconds. */
import { useEffect, useState } from "react";
import { useClient } from "../client";

/** `unknown` before the first answer; `offline` after a failed or late one. */
export type Connection = "unknown" | "online" | "offline";

/**
 * Asks `/health` every `pollMs` (a request that takes longer than that
 * counts as a failure), and reports the worker online or offline; `attempt`
 * counts the tries since it went offline.
 */
export function useConnection(pollMs = 2000): { state: Connection; attempt: number } {
  const client = useClient();
  const [state, setState] = useState<Connection>("unknown");
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const check = async () => {
      const controller = new AbortController();
      const deadline = setTimeout(() => controller.abort(), pollMs);
      try {
        await client.health(controller.signal);
        if (stopped) return;
        setState("online");
        setAttempt(0);
      } catch {
        if (stopped) return;
        setState("offline");
        setAttempt((n) => n + 1);
      } finally {
        clearTimeout(deadline);
      }
      if (!stopped) timer = setTimeout(check, pollMs);
    };
    void check();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, [client, pollMs]);

  return { state, attempt };
}
