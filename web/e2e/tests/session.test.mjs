// The page kept open all day, in a real browser against the real worker: a
// reload mid-job follows the job again and shows its image; a second tab
// sees the first tab's jobs in the queue and cancels one; 20 images survive a
// reload and Clear asks first; a batch count of 3 makes 3 images, viewed full
// screen with the arrow keys; the connection badge goes grey while the worker
// is stopped and green when it is back; a dropped PNG fills the form; undo and
// mask blur in the mask editor.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { SdWorkerClient, base64ToBytes } from "@sd-worker/sdk";
import { launch, workerFromEnv } from "./browser.mjs";
import { openPage, unlock, watchProgress } from "./pages.mjs";
import { png } from "./png.mjs";

const worker = workerFromEnv();
const SIZE = 128;
const screenshots = process.env.SCREENSHOTS;
let browser;

before(async () => {
  browser = await launch();
  if (screenshots) mkdirSync(screenshots, { recursive: true });
});
after(async () => {
  await browser?.close();
});

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

/** Fills the form for a small job. */
async function fillJob(page, { prompt, steps, scheduler = "euler_a", images = 1, batch = 1, size = SIZE }) {
  await page.getByLabel("Prompt", { exact: true }).fill(prompt);
  await page.getByLabel("Steps").fill(String(steps));
  await page.getByLabel("Width").fill(String(size));
  await page.getByLabel("Height").fill(String(size));
  await page.getByLabel("Scheduler").selectOption(scheduler);
  await page.getByLabel("Images").fill(String(images));
  await page.getByLabel("Batch count").fill(String(batch));
}

/** Answers the page's next confirm() (accepting or not); resolves with its question. */
function answerNextDialog(page, accept) {
  return new Promise((resolve) => {
    page.once("dialog", async (dialog) => {
      resolve(dialog.message());
      await (accept ? dialog.accept() : dialog.dismiss());
    });
  });
}

/** The step counter's "done / total". */
async function stepCounter(page) {
  return (await page.getByTestId("step-counter").textContent()).split(" / ").map(Number);
}

test("a reload mid-job follows it again; a second tab sees the queue and cancels a job", async () => {
  const { context, page, problems } = await openPage(browser, DESKTOP);
  await unlock(page);
  // PNDM makes one UNet pass more than its steps: the counter still ends at the steps asked for.
  await fillJob(page, { prompt: "a lighthouse in a storm", steps: 150, scheduler: "pndm" });
  await page.getByRole("button", { name: "Generate" }).click();
  await page.getByRole("status").filter({ hasText: /Generating: step ([2-9]|\d\d)/ }).waitFor();
  // Generate while it runs queues a second job behind it.
  await page.getByLabel("Prompt", { exact: true }).fill("a second lighthouse, queued");
  await page.getByRole("button", { name: "Generate" }).click();
  await page.getByTestId("waiting").filter({ hasText: "1 more job(s) of yours" }).waitFor();
  const [before] = await stepCounter(page);

  await page.reload({ waitUntil: "domcontentloaded" });
  // The form and the jobs come back: the stream is followed again, from where the worker is.
  await page.getByRole("status").filter({ hasText: /Generating: step \d+ of 150/ }).waitFor();
  assert.equal(await page.getByLabel("Prompt", { exact: true }).inputValue(), "a second lighthouse, queued");
  assert.equal(await page.getByLabel("Scheduler").inputValue(), "pndm");
  const [after] = await stepCounter(page);
  assert.ok(after >= before, `the counter went back from ${before} to ${after}`);
  await page.getByTestId("waiting").waitFor();
  if (screenshots) await page.screenshot({ path: join(screenshots, "restored-job.png") });

  // A second tab (its own key prompt: the key lives in the tab) lists both jobs, with Cancel.
  const second = await openPage(browser, DESKTOP, context);
  await unlock(second.page);
  const queue = second.page.getByRole("region", { name: /^Queue/ });
  await queue.getByTestId("queue-item").filter({ hasText: /Running \d+\/150/ }).waitFor();
  const queued = queue.getByTestId("queue-item").filter({ hasText: "a second lighthouse, queued" });
  await queued.filter({ hasText: "Queued #1" }).waitFor();
  // The tab shares the browser's jobs: it follows the running one too.
  await second.page.getByRole("status").filter({ hasText: /Generating: step \d+ of 150/ }).waitFor();
  if (screenshots) await second.page.screenshot({ path: join(screenshots, "queue.png") });
  await queued.getByRole("button", { name: /^Cancel/ }).click();
  await queued.filter({ hasText: "Cancelled" }).waitFor();

  // The first tab sees its first job to the end, with the image, then the cancelled one.
  await page.getByTestId("result-image").waitFor({ timeout: 120_000 });
  assert.equal(await page.getByRole("img", { name: "Generated image: a lighthouse in a storm" }).count(), 1);
  await page.getByRole("heading", { name: "Gallery (1)" }).waitFor();
  await page.getByRole("status").filter({ hasText: /^Cancelled$/ }).waitFor();
  const finished = await (await fetch(`${worker.url}/v1/jobs`, { headers: { authorization: `Bearer ${worker.apiKey}` } })).json();
  const first = finished.jobs.find((j) => j.params.prompt === "a lighthouse in a storm");
  assert.deepEqual([first.state, first.step, first.total], ["completed", 150, 150]);
  assert.deepEqual([...problems, ...second.problems], []);
  await context.close();
});

test("20 images survive a reload, and Clear asks first", async () => {
  const { context, page, problems } = await openPage(browser, DESKTOP);
  await unlock(page);
  // 4 jobs of 5 images, 2 steps each at 64 px.
  await fillJob(page, { prompt: "pebbles", steps: 2, images: 5, batch: 4, size: 64 });
  await page.getByRole("button", { name: "Generate" }).click();
  await page.getByRole("heading", { name: "Gallery (20)" }).waitFor({ timeout: 120_000 });
  await page.reload({ waitUntil: "domcontentloaded" });
  await page.getByRole("heading", { name: "Gallery (20)" }).waitFor();
  assert.equal(await page.getByRole("button", { name: /^Show “pebbles”/ }).count(), 20);

  const asked = answerNextDialog(page, false);
  await page.getByRole("button", { name: "Clear" }).click();
  assert.match(await asked, /Delete all 20 image\(s\)/);
  assert.equal(await page.getByRole("heading", { name: "Gallery (20)" }).count(), 1, "dismissed: nothing deleted");
  const accepted = answerNextDialog(page, true);
  await page.getByRole("button", { name: "Clear" }).click();
  await accepted;
  await page.getByRole("heading", { name: "Gallery (0)" }).waitFor();
  await page.reload({ waitUntil: "domcontentloaded" });
  await page.getByRole("heading", { name: "Gallery (0)" }).waitFor();
  assert.deepEqual(problems, []);
  await context.close();
});

test("phone: batch count 3 gives 3 images, scrolled to, viewed full screen with the arrow keys", async () => {
  const { context, page, problems } = await openPage(browser, PHONE);
  await unlock(page);
  await page.getByLabel("Seed", { exact: true }).selectOption("fixed");
  await page.getByLabel("Seed value").fill("700");
  await fillJob(page, { prompt: "three foxes", steps: 3, batch: 3 });
  const posts = [];
  page.on("request", (r) => r.method() === "POST" && r.url().endsWith("/v1/jobs") && posts.push(r.postDataJSON()));
  await page.getByRole("button", { name: "Generate" }).click();
  await page.getByRole("heading", { name: "Gallery (3)" }).waitFor({ timeout: 120_000 });
  assert.deepEqual(
    posts.map((p) => p.seed),
    [700, 701, 702],
  );
  // The finished image is brought into view below the form.
  await page.waitForFunction(() => {
    const box = document.getElementById("result")?.getBoundingClientRect();
    return box !== undefined && box.top < window.innerHeight && box.bottom > 0;
  });
  await page.getByRole("button", { name: "Full screen" }).click();
  const view = page.getByRole("dialog", { name: /^Image 1 of 3/ });
  await view.waitFor();
  assert.match(await view.textContent(), /1 \/ 3 · seed 702/);
  await page.keyboard.press("ArrowRight");
  await page.getByRole("dialog", { name: /^Image 2 of 3/ }).waitFor();
  assert.match(await page.getByRole("dialog").textContent(), /seed 701/);
  await page.keyboard.press("ArrowLeft");
  await page.keyboard.press("ArrowLeft");
  await page.getByRole("dialog", { name: /^Image 3 of 3/ }).waitFor();
  if (screenshots) await page.screenshot({ path: join(screenshots, "phone-fullscreen.png") });
  await page.keyboard.press("Escape");
  assert.equal(await page.getByRole("dialog").count(), 0);
  assert.deepEqual(problems, []);
  await context.close();
});

test("the badge goes grey while the worker is stopped, and green when it is back", async () => {
  const pid = Number(process.env.SD_WORKER_PID);
  assert.ok(pid > 0, "run.sh passes the worker's pid");
  const { context, page, problems } = await openPage(browser, DESKTOP);
  await unlock(page);
  const badge = page.locator(".badge");
  await page.locator('.badge[data-state="ready"]').waitFor();
  const stoppedAt = Date.now();
  process.kill(pid, "SIGSTOP");
  try {
    await page.locator('.badge[data-state="offline"]').waitFor({ timeout: 8000 });
    const seconds = (Date.now() - stoppedAt) / 1000;
    assert.ok(seconds < 6, `the badge took ${seconds} s`);
    assert.equal(await badge.textContent(), "Worker unreachable · Reconnecting…");
    assert.equal(await page.getByText("Reconnecting…").count(), 1, "one place says it");
    assert.equal(await page.getByRole("alert").count(), 0, "no raw fetch error");
    if (screenshots) await page.screenshot({ path: join(screenshots, "offline.png") });
  } finally {
    process.kill(pid, "SIGCONT");
  }
  await page.locator('.badge[data-state="ready"]').waitFor({ timeout: 8000 });
  // The browser logs the requests that failed while the worker was stopped; nothing else.
  assert.deepEqual(
    problems.filter((p) => !/Failed to load resource|ERR_|Failed to fetch/.test(p)),
    [],
  );
  await context.close();
});

test("a dropped PNG, or pasted A1111 text, fills the form", async () => {
  const client = new SdWorkerClient({ baseUrl: worker.url, apiKey: worker.apiKey });
  const { result } = await client.generate({
    prompt: "a harbour at night",
    negative_prompt: "fog",
    steps: 3,
    guidance_scale: 6.5,
    width: 64,
    height: 96,
    seed: 4242,
    scheduler: "dpmpp_2m",
  });
  const { context, page, problems } = await openPage(browser, DESKTOP);
  await unlock(page);
  await page.locator(".app").evaluate(
    (app, base64) => {
      const data = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
      const transfer = new DataTransfer();
      transfer.items.add(new File([data], "harbour.png", { type: "image/png" }));
      app.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer, bubbles: true, cancelable: true }));
      app.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
    },
    Buffer.from(base64ToBytes(result.image)).toString("base64"),
  );
  await page.getByText("Settings read from harbour.png.").waitFor();
  const value = (label) => page.getByLabel(label, { exact: true }).inputValue();
  assert.deepEqual(
    [await value("Prompt"), await value("Negative prompt"), await value("Steps"), await value("Guidance")],
    ["a harbour at night", "fog", "3", "6.5"],
  );
  assert.deepEqual([await value("Width"), await value("Height"), await value("Seed"), await value("Seed value")], ["64", "96", "fixed", "4242"]);
  assert.equal(await value("Scheduler"), "dpmpp_2m");

  // A1111's settings text pasted into the prompt fills the form the same way.
  await page.getByLabel("Prompt", { exact: true }).fill("");
  await page.getByLabel("Prompt", { exact: true }).focus();
  await page.evaluate(() => {
    const text = "a castle\nNegative prompt: rain\nSteps: 12, Sampler: DDIM, CFG scale: 4, Seed: 9, Size: 128x64, Model: x";
    const transfer = new DataTransfer();
    transfer.setData("text/plain", text);
    document.activeElement.dispatchEvent(new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true, cancelable: true }));
  });
  await page.getByText("Settings read from the pasted text.").waitFor();
  assert.deepEqual(
    [await value("Prompt"), await value("Negative prompt"), await value("Steps"), await value("Scheduler"), await value("Width")],
    ["a castle", "rain", "12", "ddim", "128"],
  );
  assert.deepEqual(problems, []);
  await context.close();
});

test("inpainting: undo takes back strokes, a mask blur blends the result, a big picture asks before it is shrunk", async () => {
  const { context, page, problems } = await openPage(browser, DESKTOP);
  await unlock(page);
  await page.getByRole("radio", { name: "Inpaint" }).check();
  const picture = png(96, 64, (x, y) => [x * 2, y * 3, 90]);
  await page.getByLabel("Input image", { exact: true }).setInputFiles({ name: "field.png", mimeType: "image/png", buffer: picture });
  await page.getByText("field.png · 96×64 px").waitFor();
  const canvas = page.getByTestId("mask-canvas");
  const painted = () =>
    canvas.evaluate((c) => {
      const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 3; i < data.length; i += 4) if (data[i] >= 128) n++;
      return n;
    });
  const box = await canvas.boundingBox();
  const stroke = async (y) => {
    await page.mouse.move(box.x + box.width * 0.2, box.y + box.height * y);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * 0.8, box.y + box.height * y, { steps: 6 });
    await page.mouse.up();
  };
  await stroke(0.25);
  // The brush's outline follows the pointer over the picture.
  await page.getByTestId("brush-outline").waitFor();
  const one = await painted();
  await stroke(0.75);
  const two = await painted();
  assert.ok(one > 0 && two > one, `painted ${one}, then ${two}`);
  await page.getByRole("button", { name: "Undo" }).click();
  assert.equal(await painted(), one);
  await page.getByText("Painted mask · 96×64 px (white = repaint)").waitFor();
  await page.getByRole("button", { name: "Undo" }).click();
  assert.equal(await painted(), 0);
  await page.getByText("Paint over the part to repaint.").waitFor();
  assert.equal(await page.getByRole("button", { name: "Undo" }).isDisabled(), true);

  // With a mask blur the result fades into the picture: laid over it in the page, the PNG says how.
  await stroke(0.5);
  await page.locator("#mask-blur").focus();
  for (let i = 0; i < 8; i++) await page.keyboard.press("ArrowRight");
  await page.getByText("Mask blur 8 px").waitFor();
  await page.getByLabel("Prompt", { exact: true }).fill("a pond");
  await page.getByLabel("Steps").fill("2");
  const job = watchProgress(page);
  await page.getByRole("button", { name: "Generate" }).click();
  assert.equal((await job).status, "Done");
  await page.getByRole("heading", { name: "Gallery (1)" }).waitFor();
  const src = await page.getByTestId("result-image").getAttribute("src");
  const saved = Buffer.from(src.replace(/^data:image\/png;base64,/, ""), "base64");
  assert.ok(saved.includes("Steps: 2"), "the worker's parameters are kept");
  assert.ok(saved.includes("Mask blur: 8"), "and the blur is named");

  // A picture larger than the worker's --max-size: the page asks before shrinking it.
  const info = await (await fetch(`${worker.url}/v1/info`, { headers: { authorization: `Bearer ${worker.apiKey}` } })).json();
  const side = info.limits.max_size + 200;
  const big = png(side, 100, () => [20, 120, 200]);
  const asked = answerNextDialog(page, false);
  await page.getByLabel("Input image", { exact: true }).setInputFiles({ name: "wide.png", mimeType: "image/png", buffer: big });
  assert.match(await asked, new RegExp(`wide\\.png is ${side}×100 pixels.*Shrink it to ${info.limits.max_size}×`));
  await page.getByText("Drop a PNG or JPEG here, or choose a file.").first().waitFor();
  assert.equal(await page.getByText(/^wide\.png ·/).count(), 0, "declined: the picture is not taken");
  assert.deepEqual(problems, []);
  await context.close();
});
