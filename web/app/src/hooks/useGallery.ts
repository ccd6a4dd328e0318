/** The images this browser tab made, kept in sessionStorage as far as it has room. */
import { useCallback, useEffect, useState } from "react";
import { entryKey, type GalleryEntry } from "./useImageGeneration";

/** The sessionStorage key of the gallery. */
export const GALLERY_STORAGE = "sd-worker.gallery";
/** How many images the gallery keeps. */
export const GALLERY_LIMIT = 24;

function load(): GalleryEntry[] {
  try {
    const raw = sessionStorage.getItem(GALLERY_STORAGE);
    const parsed: unknown = raw ? JSON.parse(raw) : [];
    return Array.isArray(parsed) ? (parsed as GalleryEntry[]) : [];
  } catch {
    return [];
  }
}

/** Saves as many of the newest entries as storage takes. */
function save(entries: GalleryEntry[]): void {
  for (let keep = entries.length; keep >= 0; keep--) {
    try {
      if (keep === 0) sessionStorage.removeItem(GALLERY_STORAGE);
      else sessionStorage.setItem(GALLERY_STORAGE, JSON.stringify(entries.slice(0, keep)));
      return;
    } catch {
      // Over quota: try with fewer images.
    }
  }
}

/** The session gallery, newest first: add, clear. */
export function useGallery() {
  const [entries, setEntries] = useState<GalleryEntry[]>(load);
  useEffect(() => save(entries), [entries]);
  const add = useCallback(
    (entry: GalleryEntry) =>
      setEntries((list) => [entry, ...list.filter((e) => entryKey(e) !== entryKey(entry))].slice(0, GALLERY_LIMIT)),
    [],
  );
  const clear = useCallback(() => setEntries([]), []);
  return { entries, add, clear };
}
