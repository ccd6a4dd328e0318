/**
 * The gallery's images in IndexedDB, one record per image, so they survive
 * reloads and closing the tab; a page without IndexedDB (private modes,
 * tests) keeps them in memory for as long as it is open.
 */
import { entryKey, type GalleryEntry } from "../hooks/useImageGeneration";

const DATABASE = "sd-worker";
const STORE = "gallery";

/** Where gallery entries are kept. */
export interface GalleryStore {
  /** Every entry kept, in no particular order. */
  load(): Promise<GalleryEntry[]>;
  put(entry: GalleryEntry): Promise<void>;
  remove(keys: string[]): Promise<void>;
  clear(): Promise<void>;
}

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function openDatabase(): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open(DATABASE, 1);
    open.onupgradeneeded = () => {
      if (!open.result.objectStoreNames.contains(STORE)) open.result.createObjectStore(STORE);
    };
    open.onsuccess = () => resolve(open.result);
    open.onerror = () => reject(open.error);
  });
}

/** An IndexedDB store, or a memory one where IndexedDB cannot be opened. */
export function openGalleryStore(): GalleryStore {
  if (typeof indexedDB === "undefined") return memoryStore();
  const database = openDatabase();
  const fallback = memoryStore();
  const withStore = async <T,>(mode: IDBTransactionMode, run: (store: IDBObjectStore) => IDBRequest<T>) => {
    const db = await database;
    return request(run(db.transaction(STORE, mode).objectStore(STORE)));
  };
  return {
    load: () => withStore("readonly", (s) => s.getAll() as IDBRequest<GalleryEntry[]>).catch(() => fallback.load()),
    put: (entry) =>
      withStore("readwrite", (s) => s.put(entry, entryKey(entry))).then(
        () => undefined,
        () => fallback.put(entry),
      ),
    remove: async (keys) => {
      for (const key of keys) await withStore("readwrite", (s) => s.delete(key)).catch(() => fallback.remove([key]));
    },
    clear: () =>
      withStore("readwrite", (s) => s.clear()).then(
        () => undefined,
        () => fallback.clear(),
      ),
  };
}

/** Entries kept in memory only. */
export function memoryStore(): GalleryStore {
  const map = new Map<string, GalleryEntry>();
  return {
    load: async () => [...map.values()],
    put: async (entry) => {
      map.set(entryKey(entry), entry);
    },
    remove: async (keys) => {
      for (const key of keys) map.delete(key);
    },
    clear: async () => map.clear(),
  };
}
