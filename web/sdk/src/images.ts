/**
 * Input pictures for `image_transform` and `image_inpaint`: bytes or a
 * `Blob`/`File` to the plain base64 the worker takes, and the size and
 * format of a PNG or JPEG read from its header (no decoding, so it works in
 * Node and in browsers alike).
 *
 * The worker accepts plain base64 and `data:image/...;base64,` URLs; these
 * helpers produce plain base64, which every rbee component accepts too.
 */

/** The format and pixel size of a picture, from its header. */
export interface ImageInfo {
  /** `png` or `jpeg`, the formats the worker decodes. */
  format: "png" | "jpeg";
  /** The MIME type for a `data:` URL. */
  mime: "image/png" | "image/jpeg";
  width: number;
  height: number;
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/**
 * The format and size of a PNG or JPEG from its first bytes; `null` for
 * anything else (or a header too short or damaged to read).
 */
export function imageInfo(bytes: Uint8Array): ImageInfo | null {
  return pngInfo(bytes) ?? jpegInfo(bytes);
}

function pngInfo(bytes: Uint8Array): ImageInfo | null {
  if (bytes.length < 24 || !PNG_SIGNATURE.every((b, i) => bytes[i] === b)) return null;
  // The first chunk is IHDR: length (4), type (4), width (4), height (4), big-endian.
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (String.fromCharCode(...bytes.subarray(12, 16)) !== "IHDR") return null;
  const width = view.getUint32(16);
  const height = view.getUint32(20);
  if (width === 0 || height === 0) return null;
  return { format: "png", mime: "image/png", width, height };
}

/** Start-of-frame markers: baseline, extended, progressive, lossless, and the arithmetic-coded ones. */
const SOF_MARKERS = new Set([0xc0, 0xc1, 0xc2, 0xc3, 0xc5, 0xc6, 0xc7, 0xc9, 0xca, 0xcb, 0xcd, 0xce, 0xcf]);

function jpegInfo(bytes: Uint8Array): ImageInfo | null {
  if (bytes.length < 4 || bytes[0] !== 0xff || bytes[1] !== 0xd8) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 2;
  while (at + 4 <= bytes.length) {
    if (bytes[at] !== 0xff) return null;
    const marker = bytes[at + 1]!;
    if (marker === 0xff) {
      at += 1;
      continue;
    }
    // Markers without a length: TEM, RSTn, SOI.
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd8)) {
      at += 2;
      continue;
    }
    if (marker === 0xd9 || marker === 0xda) return null;
    const length = view.getUint16(at + 2);
    if (length < 2) return null;
    if (SOF_MARKERS.has(marker)) {
      if (at + 9 > bytes.length) return null;
      const height = view.getUint16(at + 5);
      const width = view.getUint16(at + 7);
      if (width === 0 || height === 0) return null;
      return { format: "jpeg", mime: "image/jpeg", width, height };
    }
    at += 2 + length;
  }
  return null;
}

/** Standard base64 of some bytes (no `data:` prefix). */
export function bytesToBase64(bytes: Uint8Array): string {
  let binary = "";
  const chunk = 0x8000;
  for (let i = 0; i < bytes.length; i += chunk) {
    binary += String.fromCharCode(...bytes.subarray(i, i + chunk));
  }
  return btoa(binary);
}

/** The bytes of base64 text, or of a `data:...;base64,` URL. Throws a `SyntaxError` on anything else. */
export function base64ToBytes(text: string): Uint8Array<ArrayBuffer> {
  let binary: string;
  try {
    binary = atob(stripDataUrl(text).replace(/\s+/g, ""));
  } catch {
    throw new SyntaxError("not valid base64");
  }
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** The base64 payload of a `data:...;base64,` URL; other text is returned trimmed. */
export function stripDataUrl(text: string): string {
  const trimmed = text.trim();
  if (!trimmed.startsWith("data:")) return trimmed;
  const at = trimmed.indexOf(";base64,");
  if (at < 0) throw new SyntaxError("a data URL must be base64 (`data:image/png;base64,...`)");
  return trimmed.slice(at + ";base64,".length);
}

/** A `data:` URL for base64 image data, for an `<img src>`. */
export function base64DataUrl(base64: string, mime = "image/png"): string {
  return `data:${mime};base64,${stripDataUrl(base64)}`;
}

/** A picture ready to send: its base64 and what its header says. */
export interface EncodedImage extends ImageInfo {
  /** Plain base64 (no `data:` prefix), as `input_image`, `init_image` or `mask_image` take it. */
  base64: string;
  /** The size in bytes. */
  bytes: number;
}

/**
 * Reads a `Blob` or `File` (or raw bytes) into {@link EncodedImage}. Rejects
 * with a `TypeError` naming what was found when it is not a PNG or JPEG.
 */
export async function encodeImage(source: Blob | Uint8Array): Promise<EncodedImage> {
  const bytes = source instanceof Uint8Array ? source : await blobBytes(source);
  const info = imageInfo(bytes);
  if (!info) {
    const type = source instanceof Uint8Array ? "" : source.type;
    throw new TypeError(`not a PNG or JPEG picture${type ? ` (${type})` : ""}`);
  }
  return { ...info, base64: bytesToBase64(bytes), bytes: bytes.length };
}

/** Standard base64 of a `Blob` or `File`, whatever its content (no `data:` prefix). */
export async function blobToBase64(blob: Blob): Promise<string> {
  return bytesToBase64(await blobBytes(blob));
}

/** A blob's bytes: `Blob.arrayBuffer` where there is one, else a `FileReader` (older browsers, jsdom). */
async function blobBytes(blob: Blob): Promise<Uint8Array> {
  if (typeof blob.arrayBuffer === "function") return new Uint8Array(await blob.arrayBuffer());
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(new Uint8Array(reader.result as ArrayBuffer));
    reader.onerror = () => reject(reader.error ?? new Error("the file could not be read"));
    reader.readAsArrayBuffer(blob);
  });
}
