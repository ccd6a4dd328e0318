// What every browser test does: open the page, unlock it with the API key, watch a job's progress.
import assert from "node:assert/strict";
import { workerFromEnv } from "./browser.mjs";

/**
 * A page at the given viewport (in a new browser context, or as another tab
 * of `context`) that records console errors (CSP violations among them) and
 * page crashes.
 */
export async function openPage(browser, viewport, context = null) {
  const worker = workerFromEnv();
  context ??= await browser.newContext({
    viewport,
    deviceScaleFactor: 1,
    colorScheme: "light",
    acceptDownloads: true,
    permissions: ["clipboard-read", "clipboard-write"],
  });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    // The browser logs every non-2xx fetch; the 401 before the key and the 400 we provoke are expected.
    if (message.type() === "error" && !/status of (400|401)/.test(message.text())) {
      problems.push(`console: ${message.text()}`);
    }
  });
  const response = await page.goto(worker.url, { waitUntil: "domcontentloaded" });
  // The page works under its Content-Security-Policy: a violation is a console error above.
  assert.match(response.headers()["content-security-policy"], /frame-ancestors 'none'/);
  assert.equal(response.headers()["x-frame-options"], "DENY");
  return { context, page, problems };
}

/** The worker asks for the key: enter it, and wait for the defaults from /v1/info. */
export async function unlock(page) {
  const worker = workerFromEnv();
  const key = page.getByLabel("API key", { exact: true });
  await key.waitFor();
  assert.equal(await page.getByRole("button", { name: "Generate" }).isDisabled(), true);
  await key.fill(worker.apiKey);
  await page.getByRole("button", { name: "Use key" }).click();
  await page.waitForFunction(() => document.querySelector("#steps")?.value !== "");
  assert.equal(await page.getByLabel("API key", { exact: true }).count(), 0);
}

/** Watches the percentage from the next job's start until it ends; returns every value seen. */
export async function watchProgress(page) {
  return page.evaluate(
    () =>
      new Promise((resolve, reject) => {
        const seen = [];
        const started = Date.now();
        let active = false;
        const timer = setInterval(() => {
          const percent = document.querySelector('[data-testid="percent"]')?.textContent ?? "";
          const status = document.querySelector(".progress-status")?.textContent ?? "";
          const ended = /^(Done|Failed|Cancelled)/.test(status);
          if (!ended && status !== "") active = true;
          if (!active) return;
          if (seen.at(-1) !== percent) seen.push(percent);
          if (ended) {
            clearInterval(timer);
            resolve({ seen, status });
          } else if (Date.now() - started > 120_000) {
            clearInterval(timer);
            reject(new Error(`no end after 120 s; last status "${status}", percents ${seen.join(", ")}`));
          }
        }, 10);
      }),
  );
}

