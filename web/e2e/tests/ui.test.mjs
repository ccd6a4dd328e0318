// The web UI in a real browser against the real worker: unlock with the API
// key, generate with live progress to 100 %, see the image, cancel a second
// job, make two images in one job, see the worker's validation error, image to image from a picked file,
// inpainting with a dropped mask the worker refuses and then a painted one,
// LoRAs from the picker and an embedding's trigger word, and the phone layout.
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { base64ToBytes, imageInfo } from "@sd-worker/sdk";
import { launch, workerFromEnv } from "./browser.mjs";
import { openPage, unlock, watchProgress } from "./pages.mjs";
import { png } from "./png.mjs";

const worker = workerFromEnv();
// The tiny model runs a 128×128 step in a blink on two cores; 512×512 takes seconds.
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

const open = (viewport) => openPage(browser, viewport);

test("desktop: generate with live progress, cancel a second job, show an API error", async () => {
  const { context, page, problems } = await open({ width: 1280, height: 800 });
  await unlock(page);
  const steps = 20;

  await page.getByLabel("Prompt", { exact: true }).fill("a lighthouse on a cliff at dusk, oil painting");
  await page.getByLabel("Negative prompt").fill("blurry");
  await page.getByLabel("Steps").fill(String(steps));
  await page.getByLabel("Width").fill(String(SIZE));
  await page.getByLabel("Height").fill(String(SIZE));
  await page.getByLabel("Scheduler").selectOption("euler_a");
  const progress = watchProgress(page);
  await page.getByRole("button", { name: "Generate" }).click();
  const { seen, status } = await progress;
  assert.equal(status, "Done", `percents seen: ${seen.join(", ")}`);
  assert.equal(seen.at(-1), "100 %");
  assert.ok(seen.some((p) => p !== "0 %" && p !== "100 %"), `no intermediate progress in ${seen.join(", ")}`);
  const [done, total] = (await page.getByTestId("step-counter").textContent()).split(" / ").map(Number);
  assert.ok(done === total && total >= steps, `step counter ${done} / ${total}`);
  assert.match(await page.getByTestId("elapsed").textContent(), /^\d+\.\d s$/);

  const image = page.getByTestId("result-image");
  await image.waitFor();
  const natural = await image.evaluate((img) => [img.complete, img.naturalWidth, img.naturalHeight]);
  assert.deepEqual(natural, [true, SIZE, SIZE]);
  assert.match(await page.getByRole("link", { name: "Download" }).getAttribute("download"), /^sd-\d+-[0-9a-f]{8}\.png$/);
  assert.equal(await page.getByRole("heading", { name: "Gallery (1)" }).count(), 1);
  if (screenshots) await page.screenshot({ path: join(screenshots, "desktop.png") });

  const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("link", { name: "Download" }).click()]);
  const png = readFileSync(await download.path());
  assert.deepEqual([...png.subarray(1, 4)], [0x50, 0x4e, 0x47]);
  assert.match(download.suggestedFilename(), /^sd-\d+-[0-9a-f]{8}\.png$/);

  await page.getByRole("button", { name: "Copy settings" }).click();
  await page.getByText("Settings copied to the clipboard.").waitFor();
  const copied = JSON.parse(await page.evaluate(() => navigator.clipboard.readText()));
  assert.equal(copied.operation, "image_generation");
  assert.equal(copied.steps, steps);
  assert.equal(copied.scheduler, "euler_a");

  await page.getByRole("button", { name: "Reuse seed" }).click();
  assert.equal(await page.getByLabel("Seed value").inputValue(), String(copied.seed));
  assert.equal(await page.getByLabel("Seed", { exact: true }).inputValue(), "fixed");

  // A long second job, cancelled while it runs.
  await page.getByLabel("Steps").fill("150");
  await page.getByLabel("Width").fill(String(SIZE));
  await page.getByLabel("Height").fill(String(SIZE));
  const second = watchProgress(page);
  await page.getByRole("button", { name: "Generate" }).click();
  await page.getByRole("status").filter({ hasText: /Generating: step ([2-9]|\d\d)/ }).waitFor();
  // "Live preview" is on by default: the progress area shows a decodable preview.
  await page.getByRole("img", { name: /^Live preview after step/ }).waitFor();
  await page.waitForFunction(() => (document.querySelector("img.progress-preview")?.naturalWidth ?? 0) > 0);
  if (screenshots) await page.screenshot({ path: join(screenshots, "desktop-progress.png") });
  await page.getByRole("button", { name: "Cancel", exact: true }).click();
  assert.equal((await second).status, "Cancelled");
  assert.equal(await page.getByRole("heading", { name: "Gallery (1)" }).count(), 1);
  const info = await (await fetch(`${worker.url}/v1/info`, { headers: { authorization: `Bearer ${worker.apiKey}` } })).json();
  assert.equal(info.jobs.running + info.jobs.queued, 0);

  // Two images in one job (seeds seed and seed + 1): both land in the gallery, the first shown.
  await page.getByLabel("Steps").fill("4");
  await page.getByLabel("Images").fill("2");
  const batch = watchProgress(page);
  await page.getByRole("button", { name: "Generate" }).click();
  assert.equal((await batch).status, "Done");
  await page.getByRole("heading", { name: "Gallery (3)" }).waitFor();
  await page.getByText(new RegExp(`image 1 of 2 · ${SIZE}×${SIZE} · seed ${copied.seed} `)).waitFor();
  const secondSeed = new RegExp(`\\(seed ${copied.seed + 1}\\)$`);
  assert.equal(await page.getByRole("button", { name: secondSeed }).count(), 1);
  await page.getByLabel("Images").fill("1");

  // The page checks numbers itself, in plain words at the field, and sends nothing.
  const posts = [];
  page.on("request", (r) => r.method() === "POST" && posts.push(r.url()));
  for (const [value, message] of [
    ["500", "Steps must be at most 150; 500 is too large."],
    ["-3", "Steps must be at least 1; -3 is too small."],
    ["2.5", "Steps must be a whole number; 2.5 has a fraction."],
    ["", "Steps is empty: enter a whole number from 1 to 150."],
  ]) {
    await page.getByLabel("Steps").fill(value);
    await page.getByRole("button", { name: "Generate" }).click();
    await page.getByRole("alert").filter({ hasText: message }).waitFor();
    assert.equal(await page.getByLabel("Steps").getAttribute("aria-invalid"), "true");
  }
  assert.deepEqual(posts, []);
  await page.getByLabel("Steps").fill("4");

  // What only the worker knows it answers with a 400, shown at the field.
  await page.getByLabel("Prompt", { exact: true }).fill("   ");
  await page.getByRole("button", { name: "Generate" }).click();
  const alert = page.getByRole("alert").filter({ hasText: "HTTP 400" });
  await alert.waitFor();
  assert.match(await alert.textContent(), /Invalid setting.*Prompt: .*HTTP 400 · invalid_request/);
  assert.equal(await page.getByLabel("Prompt", { exact: true }).getAttribute("aria-invalid"), "true");
  if (screenshots) await page.screenshot({ path: join(screenshots, "desktop-error.png") });

  assert.deepEqual(problems, []);
  await context.close();
});

/** The natural size of the result image once it has loaded. */
async function resultSize(page) {
  const image = page.getByTestId("result-image");
  await image.waitFor();
  await page.waitForFunction(() => document.querySelector('[data-testid="result-image"]')?.complete);
  return image.evaluate((img) => [img.naturalWidth, img.naturalHeight]);
}

/** Drops a PNG file on an element, as a drag from the desktop would. */
async function dropFile(page, testId, name, bytes) {
  await page.getByTestId(testId).evaluate(
    (zone, { name, base64 }) => {
      const binary = atob(base64);
      const data = Uint8Array.from(binary, (c) => c.charCodeAt(0));
      const transfer = new DataTransfer();
      transfer.items.add(new File([data], name, { type: "image/png" }));
      zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer, bubbles: true, cancelable: true }));
      zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
    },
    { name, base64: bytes.toString("base64") },
  );
}

test("desktop: image to image from a file, then inpainting with a painted mask", async () => {
  const { context, page, problems } = await open({ width: 1280, height: 800 });
  await unlock(page);

  // A 132×100 picture: the output takes its size rounded down to 8, 128×96.
  const picture = png(132, 100, (x, y) => [Math.round((255 * x) / 131), Math.round((255 * y) / 99), 160]);
  await page.getByRole("radio", { name: "Image to image" }).check();
  assert.match(await page.locator("#strength").inputValue(), /^0\.8$/);
  await page.getByLabel("Input image", { exact: true }).setInputFiles({ name: "gradient.png", mimeType: "image/png", buffer: picture });
  await page.getByText("gradient.png · 132×100 px").waitFor();
  assert.equal(await page.getByLabel("Width").inputValue(), "128");
  assert.equal(await page.getByLabel("Height").inputValue(), "96");
  await page.getByText("Output 128×96 (the image's size rounded down to 8)").waitFor();

  const steps = 10;
  await page.getByLabel("Prompt", { exact: true }).fill("a watercolour of the sea");
  await page.getByLabel("Steps").fill(String(steps));
  await page.getByLabel("Scheduler").selectOption("euler_a");
  const submitted = page.waitForRequest((r) => r.url().endsWith("/v1/jobs") && r.method() === "POST");
  const progress = watchProgress(page);
  await page.getByRole("button", { name: "Generate" }).click();
  const body = (await submitted).postDataJSON();
  assert.equal(body.operation, "image_transform");
  assert.equal(body.strength, 0.8);
  assert.equal(body.input_image, picture.toString("base64"));
  const { seen, status } = await progress;
  assert.equal(status, "Done", `percents seen: ${seen.join(", ")}`);
  const [done, total] = (await page.getByTestId("step-counter").textContent()).split(" / ").map(Number);
  // The real pipeline runs the steps strength leaves (8 of 10); the fake engine runs them all.
  const expected = worker.engine === "real" ? 8 : steps;
  assert.ok(done === total && total === expected, `expected ${expected} steps at strength 0.8, counter ${done} / ${total}`);
  assert.deepEqual(await resultSize(page), [128, 96]);
  assert.match(await page.locator(".image-meta").textContent(), /^Image to image · strength 0\.8 · 128×96/);
  if (screenshots) {
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: join(screenshots, "img2img.png") });
  }

  // The result becomes the input of an inpainting job.
  await page.getByRole("radio", { name: "Inpaint" }).check();
  assert.match(await page.locator("#strength").inputValue(), /^1$/);
  await page.getByRole("button", { name: "Use as input" }).click();
  await page.getByText(/^result \(seed \d+\) · 128×96 px/).waitFor();
  assert.equal(await page.getByRole("button", { name: "Generate" }).isEnabled(), true);

  // Without a mask the form says so at the mask.
  await page.getByRole("button", { name: "Generate" }).click();
  await page.getByRole("alert").filter({ hasText: "Mask: paint over the part to repaint" }).waitFor();

  // A dropped mask of the wrong size: the worker's 400 names mask_image, shown at the mask.
  await dropFile(page, "mask-file-drop", "small-mask.png", png(64, 64, (x) => (x < 32 ? [255, 255, 255] : [0, 0, 0])));
  await page.getByText("small-mask.png · 64×64 px").waitFor();
  assert.match(await page.getByTestId("mask-status").textContent(), /needs a mask of the image's size, 128×96/);
  await page.getByRole("button", { name: "Generate" }).click();
  const refused = page.getByRole("alert").filter({ hasText: "Mask:" });
  await refused.waitFor();
  assert.match(await refused.textContent(), /Invalid setting.*Mask: is 64x64 but the picture is 128x96; they must be the same size.*HTTP 400 · invalid_request/);
  assert.equal(await page.getByTestId("mask-canvas").getAttribute("aria-invalid"), "true");
  assert.ok(await page.locator("#image-inputs").getByRole("alert").count(), "the error shows in the picture section");

  // Clear it and paint a stroke across the middle instead.
  await page.getByRole("button", { name: "Clear mask" }).click();
  await page.getByText("Paint over the part to repaint.").waitFor();
  const box = await page.getByTestId("mask-canvas").boundingBox();
  await page.mouse.move(box.x + box.width * 0.25, box.y + box.height * 0.5);
  await page.mouse.down();
  for (let i = 1; i <= 10; i++) await page.mouse.move(box.x + box.width * (0.25 + 0.05 * i), box.y + box.height * (0.5 - 0.02 * i));
  await page.mouse.up();
  await page.getByText("Painted mask · 128×96 px (white = repaint)").waitFor();
  assert.equal(await page.getByRole("alert").count(), 0, "a new mask clears the refusal");

  await page.getByLabel("Prompt", { exact: true }).fill("a red boat");
  const inpaintRequest = page.waitForRequest((r) => r.url().endsWith("/v1/jobs") && r.method() === "POST");
  const inpainting = watchProgress(page);
  await page.getByRole("button", { name: "Generate" }).click();
  const inpaintBody = (await inpaintRequest).postDataJSON();
  assert.equal(inpaintBody.operation, "image_inpaint");
  assert.equal(inpaintBody.strength, 1);
  assert.deepEqual(imageInfo(base64ToBytes(inpaintBody.init_image)), { format: "png", mime: "image/png", width: 128, height: 96 });
  assert.deepEqual(imageInfo(base64ToBytes(inpaintBody.mask_image)), { format: "png", mime: "image/png", width: 128, height: 96 });
  const inpainted = await inpainting;
  assert.equal(inpainted.status, "Done", `percents seen: ${inpainted.seen.join(", ")}`);
  assert.deepEqual(await resultSize(page), [128, 96]);
  assert.match(await page.locator(".image-meta").textContent(), /^Inpaint · strength 1 · 128×96/);
  assert.equal(await page.getByRole("heading", { name: "Gallery (2)" }).count(), 1);
  if (screenshots) {
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: join(screenshots, "inpaint.png") });
  }

  assert.deepEqual(problems, []);
  await context.close();
});

test("desktop: LoRAs from the picker with their strengths, an embedding's trigger word inserted", async () => {
  const { context, page, problems } = await open({ width: 1280, height: 800 });
  await unlock(page);
  const add = page.getByLabel("LoRA", { exact: true });
  await page.waitForFunction(() => document.querySelectorAll("#lora-add option").length === 3);
  await add.selectOption("kohya");
  await add.selectOption("peft");
  await page.getByLabel("Strength of kohya, as a number").fill("0.6");
  await page.getByLabel("Strength of peft, as a number").fill("-0.7");
  assert.equal(await page.getByLabel("Strength of peft", { exact: true }).inputValue(), "-0.7");
  await page.getByLabel("Prompt", { exact: true }).fill("a red lighthouse on a cliff");
  await page.getByRole("button", { name: "tinythree" }).click();
  assert.equal(await page.getByLabel("Prompt", { exact: true }).inputValue(), "a red lighthouse on a cliff, tinythree");
  await page.getByLabel("Insert into the negative instead").check();
  await page.getByRole("button", { name: "tinyone" }).click();
  assert.equal(await page.getByLabel("Negative prompt").inputValue(), "tinyone");
  await page.getByLabel("Steps").fill("4");
  await page.getByLabel("Width").fill("64");
  await page.getByLabel("Height").fill("64");
  const submitted = page.waitForRequest((r) => r.url().endsWith("/v1/jobs") && r.method() === "POST");
  const progress = watchProgress(page);
  await page.getByRole("button", { name: "Generate" }).click();
  const body = (await submitted).postDataJSON();
  assert.deepEqual(body.loras, [
    { path: "kohya", strength: 0.6 },
    { path: "peft", strength: -0.7 },
  ]);
  assert.equal(body.negative_prompt, "tinyone");
  const { seen, status } = await progress;
  assert.equal(status, "Done", `percents seen: ${seen.join(", ")}`);
  assert.deepEqual(await resultSize(page), [64, 64]);
  if (screenshots) {
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: join(screenshots, "loras.png") });
  }

  // Removing one sends only the other.
  await page.getByRole("button", { name: "Remove kohya" }).click();
  const again = page.waitForRequest((r) => r.url().endsWith("/v1/jobs") && r.method() === "POST");
  const second = watchProgress(page);
  await page.getByRole("button", { name: "Generate" }).click();
  assert.deepEqual((await again).postDataJSON().loras, [{ path: "peft", strength: -0.7 }]);
  assert.equal((await second).status, "Done");
  assert.deepEqual(problems, []);
  await context.close();
});

test("phone: the layout fits 390 px and a job completes", async () => {
  const { context, page, problems } = await open({ width: 390, height: 844 });
  await unlock(page);
  await page.getByLabel("Prompt", { exact: true }).fill("a red fox in the snow");
  await page.getByLabel("Steps").fill("6");
  await page.getByLabel("Width").fill(String(SIZE));
  await page.getByLabel("Height").fill(String(SIZE));
  const progress = watchProgress(page);
  await page.getByRole("button", { name: "Generate" }).click();
  assert.equal((await progress).status, "Done");
  await page.getByTestId("result-image").waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow} px wider than the phone screen`);
  if (screenshots) await page.screenshot({ path: join(screenshots, "phone.png"), fullPage: true });

  // The inpainting form, with the result as its input, fits too.
  await page.getByRole("button", { name: "Use as input" }).click();
  await page.getByRole("radio", { name: "Inpaint" }).check();
  await page.getByTestId("mask-canvas").waitFor();
  const canvas = page.getByTestId("mask-canvas");
  await canvas.scrollIntoViewIfNeeded();
  const box = await canvas.boundingBox();
  await page.mouse.move(box.x + box.width * 0.3, box.y + box.height * 0.3);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.7, box.y + box.height * 0.6, { steps: 8 });
  await page.mouse.up();
  await page.getByText("Painted mask · 128×128 px (white = repaint)").waitFor();
  const wider = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(wider <= 0, `the inpainting form is ${wider} px wider than the phone screen`);
  if (screenshots) {
    await page.locator("#image-inputs").evaluate((section) => section.scrollIntoView({ block: "start" }));
    await page.screenshot({ path: join(screenshots, "phone-inpaint.png") });
  }
  assert.deepEqual(problems, []);
  await context.close();
});
