/** The LoRA picker (each added adapter with its strength slider) and the embeddings, whose trigger words a click inserts. */
import { useEffect, useState } from "react";
import type { EmbeddingInfo, LoraInfo } from "@sd-worker/sdk";
import type { ChosenLora } from "../settings";

/** The strength slider's range; the worker takes −4 to 4, typed values beyond the slider are kept. */
export const LORA_SLIDER = { min: -2, max: 2, step: 0.05 } as const;

/** Props of {@link ModelExtras}. */
export interface ModelExtrasProps {
  /** The worker's LoRAs (`GET /v1/loras`); null when it has no LoRA directory. */
  loras: LoraInfo[] | null;
  /** The worker's embeddings (`GET /v1/embeddings`); null when it has no embeddings directory. */
  embeddings: EmbeddingInfo[] | null;
  /** The LoRAs added to the job, in order. */
  chosen: ChosenLora[];
  onChosenChange: (chosen: ChosenLora[]) => void;
  /** Adds an embedding's trigger word to the prompt, or to the negative prompt. */
  onInsert: (word: string, negative: boolean) => void;
  /** The API field the last error named, to mark the LoRA it points at. */
  invalidField?: string | null;
  disabled?: boolean;
}

/** LoRAs and embeddings; renders nothing for a worker with neither directory. */
export function ModelExtras(props: ModelExtrasProps) {
  if (props.loras === null && props.embeddings === null) return null;
  return (
    <fieldset className="extras" disabled={props.disabled}>
      <legend>LoRA and embeddings</legend>
      {props.loras !== null && <LoraPicker {...props} loras={props.loras} />}
      {props.embeddings !== null && <EmbeddingButtons embeddings={props.embeddings} onInsert={props.onInsert} />}
    </fieldset>
  );
}

function LoraPicker({
  loras,
  chosen,
  onChosenChange,
  invalidField,
}: ModelExtrasProps & { loras: LoraInfo[] }) {
  const available = loras.filter((l) => !chosen.some((c) => c.name === l.name));
  const setStrength = (index: number, strength: number) =>
    onChosenChange(chosen.map((c, i) => (i === index ? { ...c, strength } : c)));
  return (
    <div className="lora-picker">
      <label htmlFor="lora-add">LoRA</label>
      <select
        id="lora-add"
        value=""
        disabled={available.length === 0}
        onChange={(e) => {
          if (e.target.value) onChosenChange([...chosen, { name: e.target.value, strength: 1 }]);
        }}
      >
        <option value="">{loras.length === 0 ? "No LoRA in the worker's directory" : "Add a LoRA…"}</option>
        {available.map((l) => (
          <option key={l.name} value={l.name}>
            {l.name}
            {l.targets.length > 0 ? ` (${l.targets.join(", ")})` : ""}
          </option>
        ))}
      </select>
      {chosen.length > 0 && (
        <ul className="lora-list" aria-label="LoRAs of the job">
          {chosen.map((lora, i) => (
            <li key={lora.name} className="lora-row" aria-invalid={invalidField?.startsWith(`loras[${i}]`) || undefined}>
              <span className="lora-name">{lora.name}</span>
              <input
                type="range"
                min={LORA_SLIDER.min}
                max={LORA_SLIDER.max}
                step={LORA_SLIDER.step}
                value={lora.strength}
                aria-label={`Strength of ${lora.name}`}
                onChange={(e) => setStrength(i, Number(e.target.value))}
              />
              <StrengthNumber name={lora.name} value={lora.strength} onChange={(strength) => setStrength(i, strength)} />
              <button
                type="button"
                className="icon"
                aria-label={`Remove ${lora.name}`}
                onClick={() => onChosenChange(chosen.filter((_, j) => j !== i))}
              >
                ×
              </button>
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

/** The strength as a number field: typed text stays as typed (empty, `-`) until it is a number. */
function StrengthNumber({ name, value, onChange }: { name: string; value: number; onChange: (value: number) => void }) {
  const [text, setText] = useState(String(value));
  // The slider moved: show its value, unless the text already says it.
  useEffect(() => {
    setText((current) => (current.trim() !== "" && Number(current) === value ? current : String(value)));
  }, [value]);
  return (
    <input
      type="number"
      className="lora-strength"
      min={-4}
      max={4}
      step={LORA_SLIDER.step}
      value={text}
      aria-label={`Strength of ${name}, as a number`}
      onChange={(e) => {
        setText(e.target.value);
        const number = Number(e.target.value);
        if (e.target.value.trim() !== "" && Number.isFinite(number)) onChange(number);
      }}
    />
  );
}

function EmbeddingButtons({ embeddings, onInsert }: { embeddings: EmbeddingInfo[]; onInsert: (word: string, negative: boolean) => void }) {
  const [negative, setNegative] = useState(false);
  return (
    <div className="embeddings">
      <span className="label">Embeddings</span>
      {embeddings.length === 0 ? (
        <p className="hint">No embedding this model can use.</p>
      ) : (
        <>
          <div className="embedding-list" role="group" aria-label="Embeddings: a click inserts the trigger word">
            {embeddings.map((e) => (
              <button
                type="button"
                key={e.name}
                className="chip"
                title={`${e.vectors} vector${e.vectors === 1 ? "" : "s"} · ${e.format}`}
                onClick={() => onInsert(e.name, negative)}
              >
                {e.name}
              </button>
            ))}
          </div>
          <label className="check">
            <input type="checkbox" checked={negative} onChange={(e) => setNegative(e.target.checked)} />{" "}
            Insert into the negative instead
          </label>
        </>
      )}
    </div>
  );
}

/** `text` with `word` added at its end, after a comma when it has text already. */
export function insertWord(text: string, word: string): string {
  const trimmed = text.trimEnd();
  if (trimmed === "") return word;
  return /[,(\[]$/.test(trimmed) ? `${trimmed} ${word}` : `${trimmed}, ${word}`;
}
