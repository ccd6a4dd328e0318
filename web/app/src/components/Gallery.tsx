/** The images of this browser session, newest first. */
import { imageDataUrl } from "@sd-worker/sdk";
import { entryKey, type GalleryEntry } from "../hooks/useImageGeneration";

/** Props of {@link Gallery}. */
export interface GalleryProps {
  entries: GalleryEntry[];
  /** The {@link entryKey} of the image shown large. */
  selected: string | null;
  onSelect: (entry: GalleryEntry) => void;
  onClear: () => void;
}

/** Thumbnails of this session's images; a click shows one large. */
export function Gallery({ entries, selected, onSelect, onClear }: GalleryProps) {
  return (
    <section className="gallery" aria-labelledby="gallery-title">
      <div className="gallery-head">
        <h2 id="gallery-title">This session ({entries.length})</h2>
        {entries.length > 0 && (
          <button type="button" className="link" onClick={onClear}>
            Clear
          </button>
        )}
      </div>
      {entries.length === 0 ? (
        <p className="hint">Images you generate in this tab appear here.</p>
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
