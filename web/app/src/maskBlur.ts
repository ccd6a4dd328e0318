/**
 * Mask blur for inpainting, as AUTOMATIC1111's: the worker repaints inside
 * the mask with a hard edge (it reads the mask black or white, as
 * diffusers); the page then lays the result over the original picture
 * through the mask blurred by N pixels, so the repainted part fades into
 * the rest. The PNG keeps its `parameters` text, with `Mask blur: N` added.
 */
import { base64ToBytes, bytesToBase64, imageDataUrl, type ImageResult } from "@sd-worker/sdk";
import { pictureUrl, type Picture } from "./images";
import { pngParameters } from "./pngSettings";

/** The largest mask blur the form offers, in pixels. */
export const MAX_MASK_BLUR = 32;

/**
 * Mixes `repainted` over `original` (both RGBA, the same size) by `mask`'s
 * luminance (RGBA: 255 takes the repainted pixel, 0 the original); returns
 * the mixed pixels.
 */
export function mixByMask(repainted: Uint8ClampedArray, original: Uint8ClampedArray, mask: Uint8ClampedArray): Uint8ClampedArray {
  const out = new Uint8ClampedArray(repainted.length);
  for (let i = 0; i < repainted.length; i += 4) {
    const weight = ((mask[i] ?? 0) * 0.299 + (mask[i + 1] ?? 0) * 0.587 + (mask[i + 2] ?? 0) * 0.114) / 255;
    for (let c = 0; c < 3; c++) {
      out[i + c] = (repainted[i + c] ?? 0) * weight + (original[i + c] ?? 0) * (1 - weight);
    }
    out[i + 3] = 255;
  }
  return out;
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** The PNG with an iTXt `parameters` chunk (UTF-8) right after its header chunk. */
export function withParameters(png: Uint8Array, text: string): Uint8Array {
  const encoder = new TextEncoder();
  const data = new Uint8Array([...encoder.encode("parameters"), 0, 0, 0, 0, 0, ...encoder.encode(text)]);
  const chunk = new Uint8Array(12 + data.length);
  const view = new DataView(chunk.buffer);
  view.setUint32(0, data.length);
  chunk.set(encoder.encode("iTXt"), 4);
  chunk.set(data, 8);
  view.setUint32(8 + data.length, crc32(chunk.subarray(4, 8 + data.length)));
  // Signature (8 bytes) and IHDR (4 + 4 + 13 + 4 bytes) come first.
  const at = 33;
  return new Uint8Array([...png.subarray(0, at), ...chunk, ...png.subarray(at)]);
}

async function pixels(src: string, width: number, height: number, blurPx = 0): Promise<Uint8ClampedArray> {
  const img = new Image();
  img.src = src;
  await img.decode();
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  if (!ctx) throw new Error("this browser has no 2D canvas");
  if (blurPx > 0) {
    // Black around the picture, so its edge does not blur into transparency.
    ctx.fillStyle = "black";
    ctx.fillRect(0, 0, width, height);
    ctx.filter = `blur(${blurPx / 2}px)`;
  }
  ctx.drawImage(img, 0, 0, width, height);
  return ctx.getImageData(0, 0, width, height).data;
}

/** The inpainting result laid over the original picture through the mask blurred by `blurPx`. */
export async function blendInpainting(result: ImageResult, original: Picture, mask: Picture, blurPx: number): Promise<ImageResult> {
  const { width, height } = result;
  const [repainted, base, weights] = await Promise.all([
    pixels(imageDataUrl(result), width, height),
    pixels(pictureUrl(original), width, height),
    pixels(pictureUrl(mask), width, height, blurPx),
  ]);
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  if (!ctx) throw new Error("this browser has no 2D canvas");
  const mixed = ctx.createImageData(width, height);
  mixed.data.set(mixByMask(repainted, base, weights));
  ctx.putImageData(mixed, 0, 0);
  const blob = await new Promise<Blob | null>((resolve) => canvas.toBlob(resolve, "image/png"));
  if (!blob) throw new Error("the browser could not encode the PNG");
  const parameters = pngParameters(base64ToBytes(result.image));
  const png = new Uint8Array(await blob.arrayBuffer());
  const text = parameters === null ? `Mask blur: ${blurPx}` : `${parameters}, Mask blur: ${blurPx}`;
  return { ...result, format: "png", image: bytesToBase64(withParameters(png, text)) };
}
