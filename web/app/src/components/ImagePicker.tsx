/** A file input that also takes a dropped file, with what was picked. */
import { useState, type DragEvent } from "react";
import { formatBytes, type Picture } from "../images";

/** Props of {@link ImagePicker}. */
export interface ImagePickerProps {
  /** The file input's id. */
  id: string;
  label: string;
  /** The picture picked so far. */
  picture: Picture | null;
  onFile: (file: File) => void;
  /** Removes the picture; the Remove button shows when given and a picture is picked. */
  onRemove?: () => void;
  /** Marks the input (the API field at fault). */
  invalid?: boolean;
  /** What the zone says before a file is picked. */
  hint?: string;
}

/** The first file of a drop, if any. */
function droppedFile(event: DragEvent): File | null {
  const files = event.dataTransfer?.files;
  return files && files.length > 0 ? (files[0] ?? null) : null;
}

/** A labelled file input for PNG and JPEG pictures; the whole zone takes a dropped file too. */
export function ImagePicker({ id, label, picture, onFile, onRemove, invalid, hint }: ImagePickerProps) {
  const [dragging, setDragging] = useState(false);
  const onDrop = (event: DragEvent) => {
    event.preventDefault();
    setDragging(false);
    const file = droppedFile(event);
    if (file) onFile(file);
  };
  return (
    <div
      className={dragging ? "drop-zone dragging" : "drop-zone"}
      data-testid={`${id}-drop`}
      onDragOver={(event) => {
        event.preventDefault();
        setDragging(true);
      }}
      onDragLeave={() => setDragging(false)}
      onDrop={onDrop}
    >
      <label htmlFor={id}>{label}</label>
      <div className="inline">
        <input
          id={id}
          type="file"
          accept="image/png,image/jpeg"
          aria-invalid={invalid || undefined}
          aria-describedby={`${id}-meta`}
          onChange={(event) => {
            const file = event.target.files?.[0];
            event.target.value = "";
            if (file) onFile(file);
          }}
        />
        {picture && onRemove && (
          <button type="button" onClick={onRemove} aria-label={`Remove ${label.toLowerCase()}`}>
            Remove
          </button>
        )}
      </div>
      <p id={`${id}-meta`} className="hint picture-meta">
        {picture
          ? `${picture.name} · ${picture.width}×${picture.height} px · ${formatBytes(picture.bytes)}`
          : (hint ?? "Drop a PNG or JPEG here, or choose a file.")}
      </p>
    </div>
  );
}
