/** Text to image, image to image or inpainting: a segmented radio group. */
import { MODE_LABELS, type Mode } from "../settings";

/** Props of {@link ModeSwitch}. */
export interface ModeSwitchProps {
  mode: Mode;
  onChange: (mode: Mode) => void;
  disabled?: boolean;
}

const MODES: Mode[] = ["text", "image", "inpaint"];

/** Picks what the form makes; each mode is a radio button, so arrow keys move between them. */
export function ModeSwitch({ mode, onChange, disabled }: ModeSwitchProps) {
  return (
    <fieldset className="mode-switch" disabled={disabled}>
      <legend className="sr-only">Mode</legend>
      {MODES.map((m) => (
        <label key={m} className={m === mode ? "segment checked" : "segment"}>
          <input type="radio" name="mode" value={m} checked={m === mode} onChange={() => onChange(m)} />
          <span>{MODE_LABELS[m]}</span>
        </label>
      ))}
    </fieldset>
  );
}
