import { describe, expect, it } from "vitest";
import {
  formatBytes,
  maskToOverlay,
  outputSize,
  overlayToMask,
  pictureFromResult,
  pictureUrl,
  previewWidth,
  readPicture,
  toPicturePoint,
} from "../src/images";
import { PNG_1x1, pngFile } from "./fakeWorker";

describe("readPicture", () => {
  it("reads a PNG file into base64 with its size", async () => {
    const picture = await readPicture(pngFile("photo.png", 132, 100));
    expect(picture).toMatchObject({ name: "photo.png", mime: "image/png", width: 132, height: 100 });
    expect(picture.base64).not.toMatch(/^data:/);
    expect(pictureUrl(picture)).toBe(`data:image/png;base64,${picture.base64}`);
  });

  it("refuses other formats with a message naming the file", async () => {
    const gif = new File(["GIF89a..."], "anim.gif", { type: "image/gif" });
    await expect(readPicture(gif)).rejects.toThrow("anim.gif is not a PNG or JPEG picture (image/gif); the worker reads only those.");
  });
});

describe("picture helpers", () => {
  it("takes a finished image as an input picture", () => {
    const result = { image: PNG_1x1, format: "png" as const, seed: 3, width: 64, height: 48, timings: { queued_ms: 0, generation_ms: 0, total_ms: 0 } };
    expect(pictureFromResult(result, "result")).toMatchObject({ base64: PNG_1x1, mime: "image/png", width: 64, height: 48, name: "result" });
  });

  it("rounds the output size down to the multiple, scaling big pictures to fit", () => {
    expect(outputSize(132, 100)).toEqual({ width: 128, height: 96, scaled: false });
    expect(outputSize(512, 512)).toEqual({ width: 512, height: 512, scaled: false });
    expect(outputSize(4000, 3000, 8, 2048)).toEqual({ width: 2048, height: 1536, scaled: true });
    expect(outputSize(5, 3)).toEqual({ width: 8, height: 8, scaled: false });
    expect(outputSize(130, 100, 64)).toEqual({ width: 128, height: 64, scaled: false });
  });

  it("sizes previews up to 300 px tall and formats byte counts", () => {
    expect(previewWidth({ width: 128, height: 96 })).toBe("min(100%, 400px)");
    expect(previewWidth({ width: 100, height: 200 })).toBe("min(100%, 150px)");
    expect(formatBytes(900)).toBe("900 B");
    expect(formatBytes(27 * 1024)).toBe("27 KB");
    expect(formatBytes(1.5 * 1024 * 1024)).toBe("1.5 MB");
  });

  it("maps a pointer on a scaled preview to picture pixels", () => {
    const rect = { left: 10, top: 20, width: 400, height: 300 };
    expect(toPicturePoint(210, 170, rect, 128, 96)).toEqual({ x: 64, y: 48 });
    expect(toPicturePoint(10, 20, rect, 128, 96)).toEqual({ x: 0, y: 0 });
    expect(toPicturePoint(5, 5, { left: 0, top: 0, width: 0, height: 0 }, 128, 96)).toEqual({ x: 5, y: 5 });
  });
});

describe("mask pixels", () => {
  const rgba = (...pixels: number[][]) => new Uint8ClampedArray(pixels.flat());

  it("turns painted overlay pixels white and the rest black, all opaque", () => {
    const overlay = rgba([255, 255, 255, 255], [0, 0, 0, 0], [255, 255, 255, 127], [255, 255, 255, 128]);
    const { pixels, painted } = overlayToMask(overlay);
    expect([...pixels]).toEqual([255, 255, 255, 255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255, 255]);
    expect(painted).toBe(2);
  });

  it("shows light mask pixels as overlay, thresholded at half like the worker", () => {
    const mask = rgba([255, 255, 255, 255], [0, 0, 0, 255], [128, 128, 128, 255], [127, 127, 127, 255], [255, 255, 255, 0]);
    const overlay = maskToOverlay(mask);
    const alphas = [3, 7, 11, 15, 19].map((i) => overlay[i]);
    expect(alphas).toEqual([255, 0, 255, 0, 0]);
    expect(overlayToMask(overlay).painted).toBe(2);
  });
});
