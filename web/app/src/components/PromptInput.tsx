/** The prompt and negative prompt, and the Generate button. */
import type { KeyboardEvent } from "react";

/** Props of {@link PromptInput}. */
export interface PromptInputProps {
  prompt: string;
  negativePrompt: string;
  onPromptChange: (value: string) => void;
  onNegativePromptChange: (value: string) => void;
  /** Submits (also on Ctrl+Enter or ⌘+Enter in either field). */
  onGenerate: () => void;
  /** A job is being submitted or is running: the button says so and does nothing. */
  busy: boolean;
  /** The worker cannot take jobs (not ready, or no API key yet). */
  disabled?: boolean;
  /** The API field the last error named, to mark its input. */
  invalidField?: string | null;
}

/** The prompt fields and the Generate button. */
export function PromptInput(props: PromptInputProps) {
  const onKeyDown = (event: KeyboardEvent<HTMLTextAreaElement>) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      if (!props.busy && !props.disabled) props.onGenerate();
    }
  };
  return (
    <div className="prompt-input">
      <label htmlFor="prompt">Prompt</label>
      <textarea
        id="prompt"
        name="prompt"
        rows={3}
        value={props.prompt}
        placeholder="A lighthouse on a cliff at dusk, oil painting"
        aria-invalid={props.invalidField === "prompt" || undefined}
        aria-describedby="prompt-hint"
        onChange={(e) => props.onPromptChange(e.target.value)}
        onKeyDown={onKeyDown}
      />
      <label htmlFor="negative-prompt">Negative prompt</label>
      <textarea
        id="negative-prompt"
        name="negative_prompt"
        rows={2}
        value={props.negativePrompt}
        placeholder="blurry, low quality"
        aria-invalid={props.invalidField === "negative_prompt" || undefined}
        onChange={(e) => props.onNegativePromptChange(e.target.value)}
        onKeyDown={onKeyDown}
      />
      <div className="prompt-actions">
        <button type="submit" className="primary" disabled={props.busy || props.disabled} aria-busy={props.busy}>
          {props.busy ? "Generating…" : "Generate"}
        </button>
        <span id="prompt-hint" className="hint">
          Ctrl+Enter to generate
        </span>
      </div>
    </div>
  );
}
