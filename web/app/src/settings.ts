/** The generation form's settings, their defaults from `/v1/info`, and size presets. */
import type { ImageGenerationRequest, JobParams, JobRequest, SchedulerKind, WorkerInfo } from "@sd-worker/sdk";
import type { MaskPicture, Picture } from "./images";

/** Whether a job draws a new seed or reuses a fixed one. */
export type SeedMode = "random" | "fixed";

/** What the form makes: text to image, image to image, or inpainting. */
export type Mode = "text" | "image" | "inpaint";

/** The API operation of each mode. */
export const OPERATIONS: Record<Mode, JobRequest["operation"]> = {
  text: "image_generation",
  image: "image_transform",
  inpaint: "image_inpaint",
};

/** Each mode's name for people. */
export const MODE_LABELS: Record<Mode, string> = {
  text: "Text to image",
  image: "Image to image",
  inpaint: "Inpaint",
};

/** The worker's default strength of each image mode (image to image 0.8, inpainting 1). */
export const DEFAULT_STRENGTH: Record<Exclude<Mode, "text">, string> = { image: "0.8", inpaint: "1" };

/** A LoRA added to the job: its name in the worker's LoRA directory and its strength. */
export interface ChosenLora {
  name: string;
  strength: number;
}

/** Everything the form holds. Numbers stay as the user typed them until submission. */
export interface GenerationSettings {
  mode: Mode;
  prompt: string;
  negativePrompt: string;
  steps: string;
  guidanceScale: string;
  width: string;
  height: string;
  seedMode: SeedMode;
  seed: string;
  scheduler: SchedulerKind | "";
  /** Image to image and inpainting: how far to move from the input, 0..1. */
  strength: string;
  /** Ask for live previews in the progress events. */
  livePreview: boolean;
  /** How many images one job makes (`num_images`), with consecutive seeds. */
  numImages: string;
  /** The LoRAs applied to the job, in order. */
  loras: ChosenLora[];
}

/** A named image size. */
export interface SizePreset {
  /** Stable key for the `<select>`. */
  id: string;
  /** What the user reads. */
  label: string;
  width: number;
  height: number;
}

/** The largest seed the form accepts: above it, JavaScript numbers lose integer precision. */
export const MAX_SEED = Number.MAX_SAFE_INTEGER;

/** Settings before `/v1/info` has answered: the worker fills every empty value. */
export const EMPTY_SETTINGS: GenerationSettings = {
  mode: "text",
  prompt: "",
  negativePrompt: "",
  steps: "",
  guidanceScale: "",
  width: "",
  height: "",
  seedMode: "random",
  seed: "",
  scheduler: "",
  strength: DEFAULT_STRENGTH.image,
  livePreview: true,
  numImages: "1",
  loras: [],
};

/** The worker's defaults as form values, keeping what the user already typed. */
export function withDefaults(settings: GenerationSettings, info: WorkerInfo): GenerationSettings {
  const d = info.defaults;
  if (!d) return settings;
  return {
    ...settings,
    steps: settings.steps || String(d.steps),
    guidanceScale: settings.guidanceScale || String(d.guidance_scale),
    width: settings.width || String(d.width),
    height: settings.height || String(d.height),
    scheduler: settings.scheduler || d.scheduler,
  };
}

/** The pictures an image job sends. */
export interface RequestPictures {
  image?: Picture | null;
  mask?: MaskPicture | null;
}

/**
 * The request for these settings. Empty fields are left out (the worker uses
 * its defaults); other values are sent as typed, even out of range, so the
 * worker's validation — the one source of truth — answers with its error.
 * Text to image leaves `operation` out (the SDK sends `image_generation`);
 * the image modes send theirs with the pictures as plain base64.
 */
export function toRequest(settings: GenerationSettings, pictures: RequestPictures = {}): ImageGenerationRequest | JobRequest {
  const request: ImageGenerationRequest = { prompt: settings.prompt.trim() };
  const negative = settings.negativePrompt.trim();
  if (negative) request.negative_prompt = negative;
  const number = (value: string) => (value.trim() === "" ? undefined : Number(value));
  const steps = number(settings.steps);
  if (steps !== undefined) request.steps = steps;
  const guidance = number(settings.guidanceScale);
  if (guidance !== undefined) request.guidance_scale = guidance;
  const width = number(settings.width);
  if (width !== undefined) request.width = width;
  const height = number(settings.height);
  if (height !== undefined) request.height = height;
  if (settings.seedMode === "fixed") {
    const seed = number(settings.seed);
    if (seed !== undefined) request.seed = seed;
  }
  if (settings.scheduler) request.scheduler = settings.scheduler;
  if (settings.livePreview) request.preview = true;
  const numImages = number(settings.numImages);
  if (numImages !== undefined && numImages !== 1) request.num_images = numImages;
  if (settings.loras.length > 0) request.loras = settings.loras.map((l) => ({ path: l.name, strength: l.strength }));
  if (settings.mode === "text") return request;
  const strength = number(settings.strength);
  const image = pictures.image?.base64 ?? "";
  if (settings.mode === "image") {
    return { ...request, operation: "image_transform", input_image: image, ...(strength !== undefined && { strength }) };
  }
  return {
    ...request,
    operation: "image_inpaint",
    init_image: image,
    mask_image: pictures.mask?.base64 ?? "",
    ...(strength !== undefined && { strength }),
  };
}

/**
 * What the form must have before it can send: the API field of the first
 * missing picture, with a message, or null.
 */
export function missingPicture(
  settings: GenerationSettings,
  pictures: RequestPictures,
): { field: "input_image" | "mask_image"; message: string } | null {
  if (settings.mode === "text") return null;
  if (!pictures.image) return { field: "input_image", message: "choose a PNG or JPEG picture to start from." };
  if (settings.mode === "inpaint" && !pictures.mask) {
    return { field: "mask_image", message: "paint over the part to repaint, or upload a mask (white = repaint)." };
  }
  return null;
}

/**
 * The form values that reproduce a finished image, keeping `base`'s mode,
 * live preview choice and image count (the input pictures are not part of a
 * job's parameters; an image of a batch has its own seed in `params`).
 */
export function fromParams(params: JobParams, base: GenerationSettings = EMPTY_SETTINGS): GenerationSettings {
  return {
    mode: base.mode,
    livePreview: base.livePreview,
    numImages: base.numImages,
    loras: base.loras,
    strength: params.strength != null ? String(params.strength) : base.strength,
    prompt: params.prompt,
    negativePrompt: params.negative_prompt ?? "",
    steps: String(params.steps),
    guidanceScale: String(params.guidance_scale),
    width: String(params.width),
    height: String(params.height),
    seedMode: "fixed",
    seed: String(params.seed),
    scheduler: params.scheduler,
  };
}

/**
 * A job's settings as the JSON request that reproduces it (for "copy
 * settings"). For an image job the input picture and mask are left out:
 * they are too large to copy around.
 */
export function settingsText(params: JobParams, operation: JobRequest["operation"] = "image_generation"): string {
  const request: Record<string, unknown> = {
    operation,
    prompt: params.prompt,
    negative_prompt: params.negative_prompt ?? null,
    prompt_syntax: params.prompt_syntax,
    steps: params.steps,
    guidance_scale: params.guidance_scale,
    width: params.width,
    height: params.height,
    seed: params.seed,
    scheduler: params.scheduler,
  };
  if (operation !== "image_generation" && params.strength != null) request.strength = params.strength;
  return JSON.stringify(request, null, 2);
}

const ASPECTS: Array<{ id: string; label: string; w: number; h: number }> = [
  { id: "square", label: "Square 1:1", w: 1, h: 1 },
  { id: "portrait", label: "Portrait 2:3", w: 2, h: 3 },
  { id: "landscape", label: "Landscape 3:2", w: 3, h: 2 },
  { id: "tall", label: "Tall 9:16", w: 9, h: 16 },
  { id: "wide", label: "Wide 16:9", w: 16, h: 9 },
];

/**
 * Size presets for a worker: its default size, then common aspect ratios at
 * about the default's pixel count, and a quarter-size square for quick
 * drafts; each rounded to the worker's size multiple and kept within its
 * limits, without duplicates.
 */
export function sizePresets(info: WorkerInfo): SizePreset[] {
  const d = info.defaults;
  if (!d) return [];
  const { min_size: min, max_size: max, size_multiple: step } = info.limits;
  const multiple = Math.max(1, step);
  const fit = (value: number) => {
    const rounded = Math.round(value / multiple) * multiple;
    const lo = Math.ceil(min / multiple) * multiple;
    const hi = Math.floor(max / multiple) * multiple;
    return Math.min(Math.max(rounded, lo), hi);
  };
  const area = d.width * d.height;
  const out: SizePreset[] = [
    { id: "default", label: `Default ${d.width}×${d.height}`, width: fit(d.width), height: fit(d.height) },
  ];
  for (const aspect of ASPECTS) {
    const unit = Math.sqrt(area / (aspect.w * aspect.h));
    const width = fit(unit * aspect.w);
    const height = fit(unit * aspect.h);
    out.push({ id: aspect.id, label: `${aspect.label} · ${width}×${height}`, width, height });
  }
  const draft = fit(Math.sqrt(area) / 2);
  out.push({ id: "draft", label: `Draft ${draft}×${draft}`, width: draft, height: draft });
  const seen = new Set<string>();
  return out.filter((p) => {
    const key = `${p.width}x${p.height}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** The preset matching a size, or `"custom"`. */
export function presetFor(presets: SizePreset[], width: string, height: string): string {
  const match = presets.find((p) => String(p.width) === width && String(p.height) === height);
  return match ? match.id : "custom";
}

const SCHEDULER_NAMES: Record<SchedulerKind, string> = {
  ddim: "DDIM",
  pndm: "PNDM (PLMS)",
  euler: "Euler",
  euler_a: "Euler Ancestral",
  dpmpp_2m: "DPM++ 2M",
  dpmpp_2m_karras: "DPM++ 2M Karras",
  unipc: "UniPC",
  lcm: "LCM",
};

/** A scheduler's name for people. */
export function schedulerLabel(kind: string): string {
  return (SCHEDULER_NAMES as Record<string, string>)[kind] ?? kind;
}

/** A random seed below 2^32, like the worker's own. */
export function randomSeed(): number {
  const buffer = new Uint32Array(1);
  crypto.getRandomValues(buffer);
  return buffer[0] ?? 0;
}
