/**
 * Settings read back from a picture or text: the `parameters` text chunk
 * that the worker (and AUTOMATIC1111) write into their PNGs, and the A1111
 * settings text itself (prompt, `Negative prompt:` line, `Steps: …` line).
 */
import type { SchedulerKind } from "@sd-worker/sdk";
import type { GenerationSettings } from "./settings";

const PNG_SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

/** The `parameters` text of a PNG file (tEXt or uncompressed iTXt), or null. */
export function pngParameters(bytes: Uint8Array): string | null {
  if (bytes.length < 8 || PNG_SIGNATURE.some((b, i) => bytes[i] !== b)) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 8;
  while (at + 8 <= bytes.length) {
    const length = view.getUint32(at);
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    const data = bytes.subarray(at + 8, Math.min(bytes.length, at + 8 + length));
    if (type === "IEND") break;
    if (type === "tEXt" || type === "iTXt") {
      const nul = data.indexOf(0);
      const keyword = new TextDecoder("latin1").decode(data.subarray(0, nul));
      if (keyword === "parameters") {
        if (type === "tEXt") return new TextDecoder("latin1").decode(data.subarray(nul + 1));
        // iTXt: compression flag, method, language\0, translated keyword\0, text.
        if (data[nul + 1] !== 0) return null;
        const language = data.indexOf(0, nul + 3);
        const translated = data.indexOf(0, language + 1);
        return new TextDecoder("utf-8").decode(data.subarray(translated + 1));
      }
    }
    at += 12 + length;
  }
  return null;
}

/** A1111's sampler names, as the worker writes them, and their schedulers. */
const SAMPLERS: Record<string, SchedulerKind> = {
  ddim: "ddim",
  plms: "pndm",
  euler: "euler",
  "euler a": "euler_a",
  "dpm++ 2m": "dpmpp_2m",
  "dpm++ 2m karras": "dpmpp_2m_karras",
  unipc: "unipc",
  lcm: "lcm",
};

/** The `Key: value, …` pairs of A1111's settings line (quoted values may hold commas). */
function settingsPairs(line: string): Map<string, string> {
  const pairs = new Map<string, string>();
  const pattern = /\s*([\w ]+):\s*("(?:\\.|[^"])*"|[^,]*)(?:,|$)/g;
  for (const match of line.matchAll(pattern)) {
    const key = match[1]?.trim().toLowerCase();
    const value = match[2]?.trim() ?? "";
    if (key) pairs.set(key, value.startsWith('"') ? value.slice(1, -1) : value);
  }
  return pairs;
}

/**
 * The form values an A1111 settings text gives, or null when the text has
 * no `Steps:` line. Size, steps, guidance, seed and sampler come from that
 * line; a sampler the worker does not have, and keys it does not know, are
 * left out.
 */
export function parseA1111(text: string): Partial<GenerationSettings> | null {
  const lines = text.replace(/\r\n?/g, "\n").trim().split("\n");
  let last = lines.length - 1;
  while (last >= 0 && !/^Steps:\s*\d/.test(lines[last]!.trim())) last--;
  if (last < 0) return null;
  const pairs = settingsPairs(lines[last]!);
  const before = lines.slice(0, last);
  const negativeAt = before.findIndex((line) => line.startsWith("Negative prompt:"));
  const prompt = (negativeAt < 0 ? before : before.slice(0, negativeAt)).join("\n").trim();
  const negative =
    negativeAt < 0
      ? ""
      : [before[negativeAt]!.slice("Negative prompt:".length), ...before.slice(negativeAt + 1)].join("\n").trim();
  const out: Partial<GenerationSettings> = { prompt, negativePrompt: negative };
  const steps = pairs.get("steps");
  if (steps) out.steps = steps;
  const cfg = pairs.get("cfg scale");
  if (cfg) out.guidanceScale = cfg;
  const seed = pairs.get("seed");
  if (seed && /^\d+$/.test(seed)) {
    out.seedMode = "fixed";
    out.seed = seed;
  }
  const size = pairs.get("size")?.match(/^(\d+)x(\d+)$/);
  if (size) {
    out.width = size[1]!;
    out.height = size[2]!;
  }
  const sampler = pairs.get("sampler")?.toLowerCase();
  if (sampler && SAMPLERS[sampler]) out.scheduler = SAMPLERS[sampler];
  const strength = pairs.get("denoising strength");
  if (strength) out.strength = strength;
  return out;
}

/** The settings in a dropped or pasted file: a PNG's `parameters`, or a text file's A1111 text. */
export async function settingsFromFile(file: Blob): Promise<Partial<GenerationSettings> | null> {
  const bytes = new Uint8Array(await file.arrayBuffer());
  const text = pngParameters(bytes);
  if (text !== null) return parseA1111(text);
  if (file.type.startsWith("text/")) return parseA1111(new TextDecoder().decode(bytes));
  return null;
}
