/** The images made in this browser, kept in IndexedDB up to a stated bound. */
import { useCallback, useEffect, useRef, useState } from "react";
import { openGalleryStore, type GalleryStore } from "../storage/galleryStore";
import { entryKey, type GalleryEntry } from "./useImageGeneration";

/** How many images the gallery keeps; beyond it the oldest go, one for each new one. */
export const GALLERY_LIMIT = 200;
/** From how many images on the gallery warns that the oldest will be dropped. */
export const GALLERY_WARN_AT = GALLERY_LIMIT - 10;

/** Newest first; the images of one job in order. */
function newestFirst(a: GalleryEntry, b: GalleryEntry): number {
  return b.finishedAt - a.finishedAt || (a.index ?? 0) - (b.index ?? 0);
}

/** What {@link useGallery} returns. */
export interface Gallery {
  /** Newest first. */
  entries: GalleryEntry[];
  /** The stored images have been read. */
  loaded: boolean;
  add: (entry: GalleryEntry) => void;
  clear: () => void;
}

/** The gallery, newest first: add, clear; stored in `store` (IndexedDB by default). */
export function useGallery(store?: GalleryStore): Gallery {
  const storeRef = useRef<GalleryStore | null>(store ?? null);
  storeRef.current ??= openGalleryStore();
  const [entries, setEntries] = useState<GalleryEntry[]>([]);
  const [loaded, setLoaded] = useState(false);

  useEffect(() => {
    let cancelled = false;
    void storeRef.current!.load().then((stored) => {
      if (cancelled) return;
      setEntries((added) => {
        const keys = new Set(added.map(entryKey));
        return [...added, ...stored.filter((e) => !keys.has(entryKey(e)))].sort(newestFirst).slice(0, GALLERY_LIMIT);
      });
      setLoaded(true);
    });
    return () => {
      cancelled = true;
    };
  }, []);

  const add = useCallback((entry: GalleryEntry) => {
    const store = storeRef.current!;
    void store.put(entry);
    setEntries((list) => {
      const next = [entry, ...list.filter((e) => entryKey(e) !== entryKey(entry))];
      const dropped = next.slice(GALLERY_LIMIT);
      if (dropped.length > 0) void store.remove(dropped.map(entryKey));
      return next.slice(0, GALLERY_LIMIT);
    });
  }, []);
  const clear = useCallback(() => {
    void storeRef.current!.clear();
    setEntries([]);
  }, []);
  return { entries, loaded, add, clear };
}
