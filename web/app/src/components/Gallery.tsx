/** The images made in this browser, newest first. */
import { imageDataUrl } from "@sd-worker/sdk";
import { entryKey, type GalleryEntry } from "../hooks/useImageGeneration";

/** Props of {@link Gallery}. */
export interface GalleryProps {
  entries: GalleryEntry[];
  /** The {@link entryKey} of the image shown large. */
  selected: string | null;
  onSelect: (entry: GalleryEntry) => void;
  /** Asks before clearing (the caller's job). */
  onClear: () => void;
  /** Shown above the thumbnails: the gallery is about to drop its oldest images. */
  warning?: string | null;
}

/** Thumbnails of the images kept in this browser; a click shows one large. */
export function Gallery({ entries, selected, onSelect, onClear, warning }: GalleryProps) {
  return (
    <section className="gallery" aria-labelledby="gallery-title">
      <div className="gallery-head">
        <h2 id="gallery-title">Gallery ({entries.length})</h2>
        {entries.length > 0 && (
          <button type="button" className="link" onClick={onClear}>
            Clear
          </button>
        )}
      </div>
      {warning && (
        <p className="warning" role="status">
          {warning}
        </p>
      )}
      {entries.length === 0 ? (
        <p className="hint">Images you generate appear here, and stay in this browser until you clear them.</p>
      ) : (
        <ul className="gallery-grid">
          {entries.map((entry) => (
            <li key={entryKey(entry)}>
              <button
                type="button"
                className="thumb"
                aria-pressed={entryKey(entry) === selected}
                aria-label={`Show “${entry.params.prompt}” (seed ${entry.result.seed})`}
                onClick={() => onSelect(entry)}
              >
                <img src={imageDataUrl(entry.result)} alt="" loading="lazy" />
              </button>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
