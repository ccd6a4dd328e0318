/** The input picture and mask of image-to-image and inpainting jobs. */
import { useCallback, useRef, useState } from "react";
import { readPicture, type MaskPicture, type Picture } from "../images";

/** A problem with a picked file, for the field it belongs to. */
export interface PictureError {
  /** The API field: `input_image` or `mask_image`. */
  field: "input_image" | "mask_image";
  message: string;
}

/** What {@link useImageInputs} returns. */
export interface ImageInputs {
  /** The input picture. */
  image: Picture | null;
  /** The mask (inpainting); cleared when the image changes. */
  mask: MaskPicture | null;
  /** Why the last picked file was refused. */
  error: PictureError | null;
  /** A file is being read. */
  reading: boolean;
  /** Reads a file as the input picture; resolves with it, or null when it was refused. */
  pickImage: (file: File) => Promise<Picture | null>;
  /** Uses a picture already in memory (a finished image) as the input. */
  setImage: (picture: Picture | null) => void;
  /** Reads a file as the mask (sent as it is). */
  pickMask: (file: File) => Promise<MaskPicture | null>;
  /** Sets (or, with null, clears) the mask, e.g. one painted in the page. */
  setMask: (mask: MaskPicture | null) => void;
  /** Forgets the last file error. */
  clearError: () => void;
}

/**
 * Holds the picture and mask the form sends. Files are read with the SDK
 * (PNG and JPEG, sized from their headers); a new image drops the mask,
 * whose size must match it.
 */
export function useImageInputs(): ImageInputs {
  const [image, setImageState] = useState<Picture | null>(null);
  const [mask, setMask] = useState<MaskPicture | null>(null);
  const [error, setError] = useState<PictureError | null>(null);
  const [reading, setReading] = useState(false);
  // The latest pick wins when files are read out of order.
  const generation = useRef(0);

  const setImage = useCallback((picture: Picture | null) => {
    generation.current++;
    setImageState(picture);
    setMask(null);
    setError(null);
  }, []);

  const read = useCallback(async <T>(file: File, field: PictureError["field"], apply: (p: Picture) => T) => {
    const ticket = ++generation.current;
    setReading(true);
    try {
      const picture = await readPicture(file);
      if (ticket !== generation.current) return null;
      setError(null);
      return apply(picture);
    } catch (e) {
      if (ticket === generation.current) setError({ field, message: e instanceof Error ? e.message : String(e) });
      return null;
    } finally {
      if (ticket === generation.current) setReading(false);
    }
  }, []);

  const pickImage = useCallback(
    (file: File) =>
      read(file, "input_image", (picture) => {
        setImageState(picture);
        setMask(null);
        return picture;
      }),
    [read],
  );

  const pickMask = useCallback(
    (file: File) =>
      read(file, "mask_image", (picture) => {
        const mask = { ...picture, painted: false };
        setMask(mask);
        return mask;
      }),
    [read],
  );

  const clearError = useCallback(() => setError(null), []);
  return { image, mask, error, reading, pickImage, setImage, pickMask, setMask, clearError };
}
