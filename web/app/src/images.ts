/** Input pictures for image to image and inpainting: reading files, output sizes and mask pixels. */
import { base64DataUrl, encodeImage, type ImageResult } from "@sd-worker/sdk";

/** A picture chosen as the job's input (or mask), ready to send. */
export interface Picture {
  /** Plain base64 of the file's bytes (no `data:` prefix). */
  base64: string;
  mime: "image/png" | "image/jpeg";
  width: number;
  height: number;
  /** The file name, or what the picture came from. */
  name: string;
  /** Size of the file in bytes. */
  bytes: number;
}

/** A mask: an uploaded file, or one painted in the page (then exported at the image's exact size). */
export interface MaskPicture extends Picture {
  painted: boolean;
}

/** Reads a dropped or chosen file; rejects with a message for people when it is not a PNG or JPEG. */
export async function readPicture(file: File): Promise<Picture> {
  try {
    const encoded = await encodeImage(file);
    return {
      base64: encoded.base64,
      mime: encoded.mime,
      width: encoded.width,
      height: encoded.height,
      name: file.name || "image",
      bytes: encoded.bytes,
    };
  } catch (error) {
    const name = file.name || "the file";
    if (error instanceof TypeError && error.message.startsWith("not a PNG or JPEG")) {
      const type = file.type ? ` (${file.type})` : "";
      throw new Error(`${name} is not a PNG or JPEG picture${type}; the worker reads only those.`, { cause: error });
    }
    throw new Error(`Cannot read ${name}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
}

/** A finished image as an input picture (for "Use as input"). */
export function pictureFromResult(result: ImageResult, name: string): Picture {
  return {
    base64: result.image,
    mime: result.format === "png" ? "image/png" : "image/jpeg",
    width: result.width,
    height: result.height,
    name,
    bytes: Math.floor((result.image.length * 3) / 4),
  };
}

/** A `data:` URL of a picture, for `<img src>`. */
export function pictureUrl(picture: Picture): string {
  return base64DataUrl(picture.base64, picture.mime);
}

/** The tallest a picture preview gets, in CSS pixels. */
export const PREVIEW_MAX_HEIGHT = 300;

/**
 * The CSS width of a picture preview: as wide as its container, but no
 * taller than {@link PREVIEW_MAX_HEIGHT} (small pictures are scaled up, so
 * a mask can be painted on them).
 */
export function previewWidth(picture: Pick<Picture, "width" | "height">): string {
  return `min(100%, ${Math.round((PREVIEW_MAX_HEIGHT * picture.width) / Math.max(1, picture.height))}px)`;
}

/** "12 KB", "1.4 MB". */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

/** The output size the worker picks for a picture without width and height. */
export interface OutputSize {
  width: number;
  height: number;
  /** The picture was larger than the worker's maximum side and the size was scaled down to fit. */
  scaled: boolean;
}

/**
 * A picture's size rounded down to the worker's size multiple (8), as the
 * worker does without `width`/`height`; scaled down first, keeping the
 * aspect ratio, when a side exceeds `maxSize`.
 */
export function outputSize(width: number, height: number, multiple = 8, maxSize = Infinity): OutputSize {
  const step = Math.max(1, multiple);
  const scale = Math.min(1, maxSize / Math.max(width, height));
  const round = (value: number) => Math.max(step, Math.floor((value * scale) / step) * step);
  return { width: round(width), height: round(height), scaled: scale < 1 };
}

/** The colour painted strokes show in: white, as in the mask (see-through by the canvas's CSS opacity). */
export const OVERLAY_RGB: readonly [number, number, number] = [255, 255, 255];

/**
 * The mask for painted overlay pixels (RGBA): white where the alpha is at
 * least half (painted, to repaint), black elsewhere, opaque. Returns the
 * number of white pixels too.
 */
export function overlayToMask(overlay: Uint8ClampedArray): { pixels: Uint8ClampedArray; painted: number } {
  const pixels = new Uint8ClampedArray(overlay.length);
  let painted = 0;
  for (let i = 0; i < overlay.length; i += 4) {
    const on = (overlay[i + 3] ?? 0) >= 128;
    if (on) painted++;
    const v = on ? 255 : 0;
    pixels[i] = v;
    pixels[i + 1] = v;
    pixels[i + 2] = v;
    pixels[i + 3] = 255;
  }
  return { pixels, painted };
}

/**
 * The overlay for mask pixels (RGBA): the overlay colour where the mask is
 * light (luminance of at least half, as the worker thresholds), transparent
 * elsewhere.
 */
export function maskToOverlay(mask: Uint8ClampedArray): Uint8ClampedArray {
  const pixels = new Uint8ClampedArray(mask.length);
  for (let i = 0; i < mask.length; i += 4) {
    const alpha = (mask[i + 3] ?? 255) / 255;
    const luma = (0.299 * (mask[i] ?? 0) + 0.587 * (mask[i + 1] ?? 0) + 0.114 * (mask[i + 2] ?? 0)) * alpha;
    if (luma >= 127.5) {
      pixels[i] = OVERLAY_RGB[0];
      pixels[i + 1] = OVERLAY_RGB[1];
      pixels[i + 2] = OVERLAY_RGB[2];
      pixels[i + 3] = 255;
    }
  }
  return pixels;
}

/** A pointer position on an element showing a picture, in the picture's pixels. */
export function toPicturePoint(
  clientX: number,
  clientY: number,
  rect: { left: number; top: number; width: number; height: number },
  width: number,
  height: number,
): { x: number; y: number } {
  const sx = rect.width > 0 ? width / rect.width : 1;
  const sy = rect.height > 0 ? height / rect.height : 1;
  return { x: (clientX - rect.left) * sx, y: (clientY - rect.top) * sy };
}
