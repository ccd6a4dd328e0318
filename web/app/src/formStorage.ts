/** The form's values kept in localStorage, so a reload or a second tab starts where the person left off. */
import type { GenerationSettings } from "./settings";

/** The localStorage key of the form. */
export const FORM_STORAGE = "sd-worker.form";

/** What the page remembers of the form. */
export interface StoredForm {
  /** The settings typed so far (pictures are not kept: they can be large). */
  settings: Partial<GenerationSettings>;
  /** How many jobs one Generate queues. */
  batchCount: string;
}

/** The remembered form, or nothing remembered. */
export function loadForm(): StoredForm {
  try {
    const parsed = JSON.parse(localStorage.getItem(FORM_STORAGE) ?? "null") as Partial<StoredForm> | null;
    if (parsed && typeof parsed === "object") {
      const settings = parsed.settings && typeof parsed.settings === "object" ? parsed.settings : {};
      const batchCount = typeof parsed.batchCount === "string" ? parsed.batchCount : "1";
      return { settings, batchCount };
    }
  } catch {
    // Unreadable: start afresh.
  }
  return { settings: {}, batchCount: "1" };
}

/** Remembers the form. */
export function saveForm(form: StoredForm): void {
  try {
    localStorage.setItem(FORM_STORAGE, JSON.stringify(form));
  } catch {
    // Storage can be disabled or full: the form is then forgotten on reload.
  }
}
