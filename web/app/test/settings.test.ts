import { describe, expect, it } from "vitest";
import {
  DEFAULT_STRENGTH,
  EMPTY_SETTINGS,
  fromParams,
  missingPicture,
  presetFor,
  schedulerLabel,
  settingsText,
  sizePresets,
  toRequest,
  withDefaults,
} from "../src/settings";
import { INFO } from "./fakeWorker";

describe("settings", () => {
  it("fills the worker's defaults without overwriting what was typed", () => {
    const s = withDefaults({ ...EMPTY_SETTINGS, steps: "7" }, INFO);
    expect(s).toMatchObject({ steps: "7", guidanceScale: "7.5", width: "512", height: "512", scheduler: "pndm" });
  });

  it("derives size presets from the defaults and limits", () => {
    const presets = sizePresets(INFO);
    expect(presets[0]).toEqual({ id: "default", label: "Default 512×512", width: 512, height: 512 });
    const byId = Object.fromEntries(presets.map((p) => [p.id, [p.width, p.height]]));
    expect(byId.portrait).toEqual([416, 624]);
    expect(byId.wide).toEqual([680, 384]);
    expect(byId.draft).toEqual([256, 256]);
    expect(byId.square).toBeUndefined();
    for (const p of presets) {
      expect(p.width % 8).toBe(0);
      expect(p.height % 8).toBe(0);
    }
    expect(presetFor(presets, "256", "256")).toBe("draft");
    expect(presetFor(presets, "100", "256")).toBe("custom");
  });

  it("keeps presets inside tight limits", () => {
    const info = { ...INFO, limits: { ...INFO.limits, min_size: 384, max_size: 512, size_multiple: 64 } };
    for (const p of sizePresets(info)) {
      expect(p.width).toBeGreaterThanOrEqual(384);
      expect(p.height).toBeLessThanOrEqual(512);
      expect(p.width % 64).toBe(0);
    }
  });

  it("builds the request, leaving empty fields to the worker and sending out-of-range values as typed", () => {
    const s = { ...EMPTY_SETTINGS, prompt: "  a cat ", steps: "500", width: "64", seedMode: "random" as const, seed: "9" };
    expect(toRequest(s)).toEqual({ prompt: "a cat", steps: 500, width: 64, preview: true });
    const fixed = { ...s, seedMode: "fixed" as const, negativePrompt: "dog", scheduler: "euler_a" as const };
    expect(toRequest(fixed)).toMatchObject({ seed: 9, negative_prompt: "dog", scheduler: "euler_a" });
    expect(EMPTY_SETTINGS.numImages).toBe("1");
    expect(toRequest({ ...s, numImages: "3" })).toMatchObject({ num_images: 3 });
    expect(toRequest({ ...s, numImages: "9" })).toMatchObject({ num_images: 9 });
    expect(toRequest({ ...s, numImages: "" })).not.toHaveProperty("num_images");
  });

  it("round-trips a job's params", () => {
    const params = {
      prompt: "p",
      negative_prompt: null,
      prompt_syntax: "a1111" as const,
      steps: 3,
      guidance_scale: 5,
      width: 64,
      height: 96,
      seed: 7,
      num_images: 1,
      scheduler: "ddim" as const,
    };
    const s = fromParams(params, { ...EMPTY_SETTINGS, livePreview: false });
    expect(s.seedMode).toBe("fixed");
    expect(toRequest(s)).toEqual({ prompt: "p", steps: 3, guidance_scale: 5, width: 64, height: 96, seed: 7, scheduler: "ddim" });
    // The copied request reproduces this one image: it names no image count.
    const { num_images: _count, ...fields } = params;
    expect(JSON.parse(settingsText(params))).toEqual({ operation: "image_generation", ...fields });
  });

  it("builds image-to-image and inpainting requests with plain base64 pictures", () => {
    const image = { base64: "SU1BR0U=", mime: "image/png" as const, width: 132, height: 100, name: "in.png", bytes: 5 };
    const mask = { ...image, base64: "TUFTSw==", painted: true };
    const base = { ...EMPTY_SETTINGS, prompt: "sea", width: "128", height: "96", livePreview: false };
    expect(toRequest({ ...base, mode: "image", strength: "0.8" }, { image })).toEqual({
      operation: "image_transform",
      prompt: "sea",
      width: 128,
      height: 96,
      input_image: "SU1BR0U=",
      strength: 0.8,
    });
    expect(toRequest({ ...base, mode: "inpaint", strength: "1" }, { image, mask })).toEqual({
      operation: "image_inpaint",
      prompt: "sea",
      width: 128,
      height: 96,
      init_image: "SU1BR0U=",
      mask_image: "TUFTSw==",
      strength: 1,
    });
    expect(toRequest({ ...base, mode: "image", strength: "" }, { image })).not.toHaveProperty("strength");
    expect(toRequest({ ...base, mode: "text" }, { image })).toEqual({ prompt: "sea", width: 128, height: 96 });
    expect(DEFAULT_STRENGTH).toEqual({ image: "0.8", inpaint: "1" });
  });

  it("asks for live previews unless they are turned off", () => {
    expect(EMPTY_SETTINGS.livePreview).toBe(true);
    const on = { ...EMPTY_SETTINGS, prompt: "sea" };
    expect(toRequest(on)).toEqual({ prompt: "sea", preview: true });
    expect(toRequest({ ...on, livePreview: false })).toEqual({ prompt: "sea" });
    const image = { base64: "A", mime: "image/png" as const, width: 8, height: 8, name: "a", bytes: 1 };
    expect(toRequest({ ...on, mode: "image" }, { image })).toMatchObject({ operation: "image_transform", preview: true });
    expect(fromParams({ prompt: "p", prompt_syntax: "a1111", steps: 1, guidance_scale: 0, width: 8, height: 8, seed: 1, num_images: 1, scheduler: "ddim" }, on).livePreview).toBe(true);
  });

  it("says which picture is missing before sending", () => {
    const image = { base64: "A", mime: "image/png" as const, width: 8, height: 8, name: "a", bytes: 1 };
    expect(missingPicture(EMPTY_SETTINGS, {})).toBeNull();
    expect(missingPicture({ ...EMPTY_SETTINGS, mode: "image" }, {})?.field).toBe("input_image");
    expect(missingPicture({ ...EMPTY_SETTINGS, mode: "image" }, { image })).toBeNull();
    expect(missingPicture({ ...EMPTY_SETTINGS, mode: "inpaint" }, { image })?.field).toBe("mask_image");
  });

  it("reuses an image job's strength, keeping the form's mode, and copies its operation", () => {
    const params = { prompt: "p", prompt_syntax: "a1111" as const, steps: 3, guidance_scale: 5, width: 64, height: 96, seed: 7, num_images: 1, scheduler: "ddim" as const, strength: 0.45 };
    const s = fromParams(params, { ...EMPTY_SETTINGS, mode: "inpaint" });
    expect(s).toMatchObject({ mode: "inpaint", strength: "0.45", seed: "7" });
    expect(fromParams({ ...params, strength: null }, { ...EMPTY_SETTINGS, strength: "0.3" }).strength).toBe("0.3");
    expect(JSON.parse(settingsText(params, "image_transform"))).toMatchObject({ operation: "image_transform", strength: 0.45 });
    expect(JSON.parse(settingsText(params))).not.toHaveProperty("strength");
  });

  it("names schedulers for people, falling back to the wire name", () => {
    expect(schedulerLabel("euler_a")).toBe("Euler Ancestral");
    expect(schedulerLabel("dpmpp_2m_karras")).toBe("DPM++ 2M Karras");
    expect(schedulerLabel("lcm")).toBe("LCM");
    expect(schedulerLabel("some_future_kind")).toBe("some_future_kind");
  });
});
