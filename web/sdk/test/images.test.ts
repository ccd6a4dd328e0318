import { describe, expect, it } from "vitest";
import {
  base64DataUrl,
  base64ToBytes,
  blobToBase64,
  bytesToBase64,
  encodeImage,
  imageInfo,
  stripDataUrl,
} from "../src/index.js";

/** A 1×1 PNG. */
const PNG_1x1 =
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

/** A PNG header (signature and IHDR) claiming the given size. */
function pngHeader(width: number, height: number): Uint8Array {
  const bytes = new Uint8Array(33);
  bytes.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52]);
  const view = new DataView(bytes.buffer);
  view.setUint32(16, width);
  view.setUint32(20, height);
  bytes.set([8, 6, 0, 0, 0], 24);
  return bytes;
}

/** A JPEG's first segments: SOI, an APP0 (JFIF), a fill byte, then a start-of-frame with the given size. */
function jpegHeader(width: number, height: number, sof = 0xc0): Uint8Array {
  const app0 = [0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00];
  const sofSegment = [0xff, sof, 0x00, 0x11, 0x08, height >> 8, height & 0xff, width >> 8, width & 0xff, 0x03];
  return new Uint8Array([0xff, 0xd8, ...app0, 0xff, ...sofSegment, ...new Array(9).fill(0)]);
}

describe("imageInfo", () => {
  it("reads a PNG's size from its IHDR", () => {
    expect(imageInfo(base64ToBytes(PNG_1x1))).toEqual({ format: "png", mime: "image/png", width: 1, height: 1 });
    expect(imageInfo(pngHeader(640, 427))).toMatchObject({ width: 640, height: 427 });
  });

  it("reads a JPEG's size from its start-of-frame, baseline or progressive", () => {
    expect(imageInfo(jpegHeader(1024, 768))).toEqual({ format: "jpeg", mime: "image/jpeg", width: 1024, height: 768 });
    expect(imageInfo(jpegHeader(300, 200, 0xc2))).toMatchObject({ format: "jpeg", width: 300, height: 200 });
  });

  it("answers null for other formats and damaged headers", () => {
    expect(imageInfo(new TextEncoder().encode("GIF89a......"))).toBeNull();
    expect(imageInfo(new Uint8Array())).toBeNull();
    expect(imageInfo(pngHeader(640, 427).subarray(0, 20))).toBeNull();
    expect(imageInfo(pngHeader(0, 10))).toBeNull();
    expect(imageInfo(jpegHeader(100, 100).subarray(0, 24))).toBeNull();
    // Start of scan before any frame header.
    expect(imageInfo(new Uint8Array([0xff, 0xd8, 0xff, 0xda, 0x00, 0x02]))).toBeNull();
  });

  it("reads from a view into a larger buffer", () => {
    const buffer = new Uint8Array(100);
    buffer.set(pngHeader(96, 64), 10);
    expect(imageInfo(buffer.subarray(10))).toMatchObject({ width: 96, height: 64 });
  });
});

describe("base64", () => {
  it("round-trips bytes, large ones included", () => {
    const bytes = new Uint8Array(200_000).map((_, i) => (i * 31) % 256);
    const text = bytesToBase64(bytes);
    expect(text).toBe(Buffer.from(bytes).toString("base64"));
    expect(base64ToBytes(text)).toEqual(bytes);
  });

  it("strips a data URL's prefix, which the worker also accepts", () => {
    expect(stripDataUrl(`data:image/png;base64,${PNG_1x1}`)).toBe(PNG_1x1);
    expect(stripDataUrl(`  ${PNG_1x1}\n`)).toBe(PNG_1x1);
    expect(() => stripDataUrl("data:image/png,AAAA")).toThrow(/must be base64/);
    expect(base64ToBytes(`data:image/png;base64,${PNG_1x1}`)).toEqual(base64ToBytes(PNG_1x1));
    expect(() => base64ToBytes("not base64!")).toThrow(SyntaxError);
    expect(base64DataUrl(PNG_1x1)).toBe(`data:image/png;base64,${PNG_1x1}`);
    expect(base64DataUrl(`data:image/png;base64,${PNG_1x1}`, "image/jpeg")).toBe(`data:image/jpeg;base64,${PNG_1x1}`);
  });
});

describe("encodeImage", () => {
  it("reads a Blob into plain base64 with its format and size", async () => {
    const png = base64ToBytes(PNG_1x1);
    const encoded = await encodeImage(new Blob([png], { type: "image/png" }));
    expect(encoded).toEqual({ format: "png", mime: "image/png", width: 1, height: 1, base64: PNG_1x1, bytes: png.length });
    expect(await encodeImage(jpegHeader(64, 48))).toMatchObject({ format: "jpeg", width: 64, height: 48 });
    expect(await blobToBase64(new Blob([png]))).toBe(PNG_1x1);
  });

  it("refuses what is not a PNG or JPEG, naming the type", async () => {
    await expect(encodeImage(new Blob(["GIF89a"], { type: "image/gif" }))).rejects.toThrow("not a PNG or JPEG picture (image/gif)");
    await expect(encodeImage(new Uint8Array([1, 2, 3]))).rejects.toThrow(TypeError);
  });
});
