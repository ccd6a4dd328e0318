/**
 * The form's own check before it sends: each number must be a plain number
 * in the worker's range, in words a person reads, at the field it is about.
 * The worker still validates everything; this only saves a round trip and
 * stops an empty field from silently taking a default.
 */
import type { Limits } from "@sd-worker/sdk";
import { MAX_SEED, type GenerationSettings } from "./settings";

/** Most jobs one Generate may queue (the batch count). */
export const MAX_BATCH_COUNT = 16;

/** What is wrong with the form: the API field (or the form's own, `batch_count`) and why. */
export interface FormProblem {
  field: string;
  label: string;
  message: string;
}

interface NumberRule {
  field: string;
  label: string;
  value: string;
  min: number;
  max: number;
  whole: boolean;
  multiple?: number;
}

function checkNumber(rule: NumberRule): FormProblem | null {
  const { field, label, min, max, whole, multiple } = rule;
  const value = rule.value.trim();
  const range = `${whole ? "a whole number" : "a number"} from ${min} to ${max}`;
  const problem = (message: string) => ({ field, label, message });
  if (value === "") return problem(`${label} is empty: enter ${range}.`);
  const number = Number(value);
  if (!Number.isFinite(number)) return problem(`${label} must be ${range}; “${value}” is not a number.`);
  if (whole && !Number.isInteger(number)) return problem(`${label} must be a whole number; ${value} has a fraction.`);
  if (number < min) return problem(`${label} must be at least ${min}; ${value} is too small.`);
  if (number > max) return problem(`${label} must be at most ${max}; ${value} is too large.`);
  if (multiple && number % multiple !== 0) {
    const below = Math.max(min, Math.floor(number / multiple) * multiple);
    return problem(`${label} must be a multiple of ${multiple}, such as ${below} or ${below + multiple}.`);
  }
  return null;
}

/** The first problem of the form, or null when it can be sent. */
export function checkForm(settings: GenerationSettings, limits: Limits | undefined, batchCount: string): FormProblem | null {
  const rules: NumberRule[] = [
    { field: "steps", label: "Steps", value: settings.steps, min: 1, max: limits?.max_steps ?? 150, whole: true },
    {
      field: "guidance_scale",
      label: "Guidance",
      value: settings.guidanceScale,
      min: 0,
      max: limits?.max_guidance_scale ?? 30,
      whole: false,
    },
    {
      field: "width",
      label: "Width",
      value: settings.width,
      min: limits?.min_size ?? 64,
      max: limits?.max_size ?? 2048,
      whole: true,
      multiple: limits?.size_multiple ?? 8,
    },
    {
      field: "height",
      label: "Height",
      value: settings.height,
      min: limits?.min_size ?? 64,
      max: limits?.max_size ?? 2048,
      whole: true,
      multiple: limits?.size_multiple ?? 8,
    },
    {
      field: "num_images",
      label: "Images",
      value: settings.numImages,
      min: 1,
      max: limits?.max_num_images ?? 8,
      whole: true,
    },
    { field: "batch_count", label: "Batch count", value: batchCount, min: 1, max: MAX_BATCH_COUNT, whole: true },
  ];
  if (settings.seedMode === "fixed") {
    rules.push({ field: "seed", label: "Seed", value: settings.seed, min: 0, max: MAX_SEED, whole: true });
  }
  if (settings.mode !== "text") {
    rules.push({ field: "strength", label: "Strength", value: settings.strength, min: 0, max: 1, whole: false });
  }
  for (const rule of rules) {
    const problem = checkNumber(rule);
    if (problem) return problem;
  }
  return null;
}
