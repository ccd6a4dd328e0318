/** One gallery image over the whole window; arrow keys go through the gallery, Escape closes. */
import { useEffect, useRef } from "react";
import { imageDataUrl } from "@sd-worker/sdk";
import type { GalleryEntry } from "../hooks/useImageGeneration";

/** Props of {@link Lightbox}. */
export interface LightboxProps {
  entries: GalleryEntry[];
  /** The index in `entries` of the image shown. */
  index: number;
  onMove: (index: number) => void;
  onClose: () => void;
}

/** A modal full-screen view of `entries[index]`. */
export function Lightbox({ entries, index, onMove, onClose }: LightboxProps) {
  const dialog = useRef<HTMLDivElement>(null);
  const entry = entries[index];
  const move = (step: number) => {
    if (entries.length > 0) onMove((index + step + entries.length) % entries.length);
  };

  useEffect(() => {
    dialog.current?.focus();
  }, []);

  if (!entry) return null;
  return (
    <div
      ref={dialog}
      className="lightbox"
      role="dialog"
      aria-modal="true"
      aria-label={`Image ${index + 1} of ${entries.length}`}
      tabIndex={-1}
      onKeyDown={(event) => {
        if (event.key === "ArrowRight") move(1);
        else if (event.key === "ArrowLeft") move(-1);
        else if (event.key === "Escape") onClose();
        else return;
        event.preventDefault();
      }}
    >
      <img
        src={imageDataUrl(entry.result)}
        alt={entry.params.prompt}
        data-testid="lightbox-image"
        width={entry.result.width}
        height={entry.result.height}
      />
      <p className="lightbox-caption">
        {index + 1} / {entries.length} · seed {entry.result.seed} · {entry.params.prompt}
      </p>
      <div className="lightbox-actions">
        <button type="button" onClick={() => move(-1)} aria-label="Previous image">
          ←
        </button>
        <button type="button" onClick={() => move(1)} aria-label="Next image">
          →
        </button>
        <button type="button" onClick={onClose}>
          Close
        </button>
      </div>
    </div>
  );
}
