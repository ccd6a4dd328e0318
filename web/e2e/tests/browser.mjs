// Launches Debian's Chromium through playwright-core (no browser download).
import { chromium } from "playwright-core";

/** The flags that keep Chromium quiet on a machine without outside network. */
export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
];

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_ARGS,
  });
}

/** The worker under test, from run.sh. */
export function workerFromEnv() {
  const url = process.env.SD_WORKER_URL;
  const apiKey = process.env.SD_WORKER_API_KEY;
  if (!url || !apiKey) throw new Error("run this test through web/e2e/run.sh (SD_WORKER_URL and SD_WORKER_API_KEY unset)");
  return { url, apiKey, engine: process.env.E2E_ENGINE ?? "real" };
}
