/** A finished image with its settings, a download link, "copy settings", "reuse seed" and "use as input". */
import { useState } from "react";
import { imageDataUrl } from "@sd-worker/sdk";
import type { GalleryEntry } from "../hooks/useImageGeneration";
import { MODE_LABELS, schedulerLabel, settingsText } from "../settings";
import { formatElapsed } from "./GenerationProgress";

/** Props of {@link ImageDisplay}. */
export interface ImageDisplayProps {
  entry: GalleryEntry;
  /** Puts the image's seed into the form (seed mode "fixed"). */
  onReuseSeed: (seed: number) => void;
  /** Puts all of the image's settings into the form. */
  onUseSettings: (entry: GalleryEntry) => void;
  /** Shows the image full screen; the button shows when given. */
  onFullScreen?: () => void;
  /** Makes the image the input of the next image-to-image (or inpainting) job; the button shows when given. */
  onUseAsInput?: (entry: GalleryEntry) => void;
  /** Writes text to the clipboard; `navigator.clipboard` by default. */
  writeClipboard?: (text: string) => Promise<void>;
}

/** The file name a download gets: the seed and the job id keep names apart. */
export function downloadName(entry: GalleryEntry): string {
  return `sd-${entry.result.seed}-${entry.jobId.replace(/^job-/, "").slice(0, 8)}.${entry.result.format}`;
}

/** One finished image. */
export function ImageDisplay({
  entry,
  onReuseSeed,
  onUseSettings,
  onUseAsInput,
  onFullScreen,
  writeClipboard,
}: ImageDisplayProps) {
  const [copied, setCopied] = useState<string>("");
  const { params, result } = entry;
  const src = imageDataUrl(result);
  const operation = entry.operation ?? "image_generation";
  const made =
    operation === "image_transform"
      ? `${MODE_LABELS.image} · strength ${params.strength ?? "?"} · `
      : operation === "image_inpaint"
        ? `${MODE_LABELS.inpaint} · strength ${params.strength ?? "?"} · `
        : "";
  const copy = async () => {
    const text = settingsText(params, operation);
    try {
      const write = writeClipboard ?? ((t: string) => navigator.clipboard.writeText(t));
      await write(text);
      setCopied("Settings copied to the clipboard.");
    } catch {
      setCopied("The browser refused the clipboard; the settings are below.");
    }
  };
  return (
    <figure className="image-display" id="result">
      <img
        src={src}
        width={result.width}
        height={result.height}
        alt={`Generated image: ${params.prompt}`}
        data-testid="result-image"
      />
      <figcaption>
        <p className="image-prompt">{params.prompt}</p>
        <p className="image-meta">
          {made}
          {entry.index !== undefined && `image ${entry.index + 1} of ${params.num_images} · `}
          {result.width}×{result.height} · seed {result.seed} · {params.steps} steps · guidance {params.guidance_scale} ·{" "}
          {schedulerLabel(params.scheduler)} · {formatElapsed(result.timings.generation_ms)}
        </p>
        <div className="image-actions">
          <a className="button" href={src} download={downloadName(entry)}>
            Download
          </a>
          {onFullScreen && (
            <button type="button" onClick={onFullScreen}>
              Full screen
            </button>
          )}
          <button type="button" onClick={copy}>
            Copy settings
          </button>
          <button type="button" onClick={() => onReuseSeed(result.seed)}>
            Reuse seed
          </button>
          <button type="button" onClick={() => onUseSettings(entry)}>
            Use all settings
          </button>
          {onUseAsInput && (
            <button type="button" onClick={() => onUseAsInput(entry)}>
              Use as input
            </button>
          )}
        </div>
        <p className="hint" role="status" aria-live="polite">
          {copied}
        </p>
        {copied.startsWith("The browser refused") && (
          <textarea className="settings-text" readOnly aria-label="Settings" value={settingsText(params, operation)} />
        )}
      </figcaption>
    </figure>
  );
}
