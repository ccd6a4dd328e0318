/** The pictures of an image-to-image or inpainting job: input, mask, strength and the output size. */
import type { Limits } from "@sd-worker/sdk";
import type { ShownError } from "../errors";
import type { ImageInputs as Inputs } from "../hooks/useImageInputs";
import { outputSize, pictureUrl, previewWidth } from "../images";
import type { Mode } from "../settings";
import { ErrorMessage } from "./ErrorMessage";
import { ImagePicker } from "./ImagePicker";
import { MAX_MASK_BLUR } from "../maskBlur";
import { MaskEditor } from "./MaskEditor";

/** Props of {@link ImageInputs}. */
export interface ImageInputsProps {
  mode: Exclude<Mode, "text">;
  inputs: Inputs;
  /** A picture file was picked as the input (the form then takes its size). */
  onImageFile: (file: File) => void;
  strength: string;
  onStrengthChange: (strength: string) => void;
  /** The form's steps, for the "steps that run" hint. */
  steps: string;
  /** The form's output size. */
  width: string;
  height: string;
  /** Sets the output size to the picture's, rounded down to the size multiple. */
  onMatchSize: (width: number, height: number) => void;
  limits?: Limits;
  /** An error the worker (or the form) gave for one of these fields. */
  error: ShownError | null;
  onDismissError: () => void;
  /** Inpainting: pixels over which the result fades into the picture (0: a hard edge). */
  maskBlur?: number;
  onMaskBlurChange?: (pixels: number) => void;
  disabled?: boolean;
}

/** The picture section: shown in the image modes only. */
export function ImageInputs(props: ImageInputsProps) {
  const { mode, inputs, error, limits } = props;
  const { image, mask } = inputs;
  const field = error?.field ?? inputs.error?.field ?? null;
  const fileError: ShownError | null = inputs.error
    ? { title: "Cannot use this file", message: inputs.error.message, field: inputs.error.field, status: null, code: null }
    : null;
  const shown = fileError ?? error;
  const dismiss = fileError ? inputs.clearError : props.onDismissError;
  const errorAt = (fields: string[]) =>
    shown && fields.includes(shown.field ?? "") ? <ErrorMessage error={shown} onDismiss={dismiss} /> : null;
  const imageInvalid = field === "input_image" || field === "init_image";
  const size = image ? outputSize(image.width, image.height, limits?.size_multiple ?? 8, limits?.max_size) : null;
  const sizeMatches = size !== null && String(size.width) === props.width && String(size.height) === props.height;
  const strength = Number(props.strength);
  const steps = Number(props.steps);
  const runs = Number.isFinite(strength) && steps > 0 ? Math.min(steps, Math.floor(steps * strength)) : null;
  const maskSizeWrong = mask !== null && image !== null && (mask.width !== image.width || mask.height !== image.height);

  return (
    <section id="image-inputs" className="image-inputs" aria-label={mode === "image" ? "Image-to-image input" : "Inpainting input"}>
      <ImagePicker
        id="input-image"
        label="Input image"
        picture={image}
        onFile={props.onImageFile}
        onRemove={() => inputs.setImage(null)}
        invalid={imageInvalid}
      />
      {errorAt(["input_image", "init_image"])}
      {image && mode === "image" && (
        <img
          className="input-preview"
          src={pictureUrl(image)}
          alt={`Input image: ${image.name}`}
          width={image.width}
          height={image.height}
          style={{ width: previewWidth(image) }}
        />
      )}
      {image && mode === "inpaint" && (
        <>
          <MaskEditor image={image} mask={mask} onChange={inputs.setMask} invalid={field === "mask_image"} disabled={props.disabled} />
          <ImagePicker
            id="mask-file"
            label="Mask file (optional)"
            picture={mask && !mask.painted ? mask : null}
            onFile={(file) => void inputs.pickMask(file)}
            invalid={field === "mask_image"}
            hint="Or drop a black-and-white mask of the image's size (white = repaint)."
          />
          <p className="hint" data-testid="mask-status">
            {mask
              ? mask.painted
                ? `Painted mask · ${mask.width}×${mask.height} px (white = repaint)`
                : "Using the mask file (white = repaint)."
              : "Paint over the part to repaint."}
            {maskSizeWrong && ` The worker needs a mask of the image's size, ${image.width}×${image.height}.`}
          </p>
          {props.onMaskBlurChange && (
            <div className="mask-blur">
              <label htmlFor="mask-blur">
                Mask blur <output htmlFor="mask-blur">{props.maskBlur ?? 0} px</output>
              </label>
              <input
                id="mask-blur"
                type="range"
                min={0}
                max={MAX_MASK_BLUR}
                step={1}
                value={props.maskBlur ?? 0}
                disabled={props.disabled}
                aria-describedby="mask-blur-hint"
                onChange={(e) => props.onMaskBlurChange?.(Number(e.target.value))}
              />
              <p id="mask-blur-hint" className="hint">
                The result fades into the picture over this many pixels at the mask's edge (laid over it in this page, as
                AUTOMATIC1111 does).
              </p>
            </div>
          )}
        </>
      )}
      {errorAt(["mask_image"])}
      {image && size && (
        <p className="hint output-size">
          Output {props.width || "?"}×{props.height || "?"}
          {sizeMatches
            ? size.scaled
              ? ` (the image scaled to fit ${limits?.max_size} px, rounded down to ${limits?.size_multiple ?? 8})`
              : ` (the image's size rounded down to ${limits?.size_multiple ?? 8})`
            : " (the image is resized)"}
          {!sizeMatches && (
            <>
              {" "}
              <button type="button" className="link" onClick={() => props.onMatchSize(size.width, size.height)}>
                Use {size.width}×{size.height}
              </button>
            </>
          )}
        </p>
      )}
      <div className="field strength">
        <label htmlFor="strength">
          Strength <output htmlFor="strength">{Number.isFinite(strength) ? strength.toFixed(2) : props.strength}</output>
        </label>
        <input
          id="strength"
          name="strength"
          type="range"
          min={0}
          max={1}
          step={0.05}
          value={props.strength}
          aria-invalid={field === "strength" || undefined}
          aria-describedby="strength-hint"
          disabled={props.disabled}
          onChange={(e) => props.onStrengthChange(e.target.value)}
        />
        <p id="strength-hint" className="hint">
          {mode === "image" ? "0 keeps the picture, 1 ignores it." : "1 repaints the masked part from noise."}
          {runs !== null && ` Runs about ${runs} of ${steps} steps.`}
        </p>
      </div>
      {errorAt(["strength"])}
    </section>
  );
}
