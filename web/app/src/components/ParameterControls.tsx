/** Steps, guidance, size, seed, scheduler, image count, batch count and live preview. */
import type { SchedulerKind, WorkerInfo } from "@sd-worker/sdk";
import { MAX_BATCH_COUNT } from "../formCheck";
import {
  MAX_SEED,
  presetFor,
  randomSeed,
  schedulerLabel,
  sizePresets,
  type GenerationSettings,
} from "../settings";

/** Props of {@link ParameterControls}. */
export interface ParameterControlsProps {
  settings: GenerationSettings;
  onChange: (patch: Partial<GenerationSettings>) => void;
  /** The worker's info: presets, limits and schedulers come from it. */
  info: WorkerInfo | null;
  /** The API field the last error named, to mark its input. */
  invalidField?: string | null;
  disabled?: boolean;
  /** How many jobs one Generate queues (a form value, not part of a job). */
  batchCount?: string;
  onBatchCountChange?: (value: string) => void;
}

/** The generation parameters. Inputs carry the worker's limits as hints; the form and the worker validate. */
export function ParameterControls({
  settings,
  onChange,
  info,
  invalidField,
  disabled,
  batchCount,
  onBatchCountChange,
}: ParameterControlsProps) {
  const presets = info ? sizePresets(info) : [];
  const preset = presetFor(presets, settings.width, settings.height);
  const limits = info?.limits;
  const invalid = (field: string) => invalidField === field || undefined;
  const schedulers: string[] = info?.schedulers ?? [];

  return (
    <fieldset className="parameters" disabled={disabled}>
      <legend>Parameters</legend>
      <div className="field">
        <label htmlFor="steps">Steps</label>
        <input
          id="steps"
          name="steps"
          type="number"
          inputMode="numeric"
          min={1}
          max={limits?.max_steps}
          value={settings.steps}
          aria-invalid={invalid("steps")}
          onChange={(e) => onChange({ steps: e.target.value })}
        />
      </div>
      <div className="field">
        <label htmlFor="guidance">Guidance</label>
        <input
          id="guidance"
          name="guidance_scale"
          type="number"
          inputMode="decimal"
          min={0}
          max={limits?.max_guidance_scale}
          step={0.5}
          value={settings.guidanceScale}
          aria-invalid={invalid("guidance_scale")}
          onChange={(e) => onChange({ guidanceScale: e.target.value })}
        />
      </div>
      <div className="field wide">
        <label htmlFor="size-preset">Size</label>
        <select
          id="size-preset"
          value={preset}
          onChange={(e) => {
            const chosen = presets.find((p) => p.id === e.target.value);
            if (chosen) onChange({ width: String(chosen.width), height: String(chosen.height) });
          }}
        >
          {presets.map((p) => (
            <option key={p.id} value={p.id}>
              {p.label}
            </option>
          ))}
          <option value="custom" disabled={preset !== "custom"}>
            Custom
          </option>
        </select>
      </div>
      <div className="field">
        <label htmlFor="width">Width</label>
        <input
          id="width"
          name="width"
          type="number"
          inputMode="numeric"
          min={limits?.min_size}
          max={limits?.max_size}
          step={limits?.size_multiple}
          value={settings.width}
          aria-invalid={invalid("width")}
          onChange={(e) => onChange({ width: e.target.value })}
        />
      </div>
      <div className="field">
        <label htmlFor="height">Height</label>
        <input
          id="height"
          name="height"
          type="number"
          inputMode="numeric"
          min={limits?.min_size}
          max={limits?.max_size}
          step={limits?.size_multiple}
          value={settings.height}
          aria-invalid={invalid("height")}
          onChange={(e) => onChange({ height: e.target.value })}
        />
      </div>
      <div className="field">
        <label htmlFor="seed-mode">Seed</label>
        <select
          id="seed-mode"
          value={settings.seedMode}
          onChange={(e) => {
            const seedMode = e.target.value === "fixed" ? "fixed" : "random";
            onChange(seedMode === "fixed" && !settings.seed ? { seedMode, seed: String(randomSeed()) } : { seedMode });
          }}
        >
          <option value="random">Random</option>
          <option value="fixed">Fixed</option>
        </select>
      </div>
      <div className="field seed-value">
        <label htmlFor="seed">Seed value</label>
        <div className="inline">
          <input
            id="seed"
            name="seed"
            type="number"
            inputMode="numeric"
            min={0}
            max={MAX_SEED}
            value={settings.seedMode === "fixed" ? settings.seed : ""}
            placeholder="random"
            disabled={settings.seedMode !== "fixed"}
            aria-invalid={invalid("seed")}
            onChange={(e) => onChange({ seed: e.target.value })}
          />
          <button
            type="button"
            className="icon"
            aria-label="New random seed"
            title="New random seed"
            onClick={() => onChange({ seedMode: "fixed", seed: String(randomSeed()) })}
          >
            ⟳
          </button>
        </div>
      </div>
      <div className="field wide">
        <label htmlFor="scheduler">Scheduler</label>
        <select
          id="scheduler"
          name="scheduler"
          value={settings.scheduler}
          aria-invalid={invalid("scheduler")}
          onChange={(e) => onChange({ scheduler: e.target.value as SchedulerKind })}
        >
          {schedulers.length === 0 && <option value="">Worker default</option>}
          {schedulers.map((kind) => (
            <option key={kind} value={kind}>
              {schedulerLabel(kind)}
            </option>
          ))}
        </select>
      </div>
      <div className="field">
        <label htmlFor="num-images">Images</label>
        <input
          id="num-images"
          name="num_images"
          type="number"
          inputMode="numeric"
          min={1}
          max={limits?.max_num_images}
          step={1}
          value={settings.numImages}
          title="Images in one job, with the seeds seed, seed + 1, …"
          aria-invalid={invalid("num_images")}
          onChange={(e) => onChange({ numImages: e.target.value })}
        />
      </div>
      {onBatchCountChange && (
        <div className="field">
          <label htmlFor="batch-count">Batch count</label>
          <input
            id="batch-count"
            name="batch_count"
            type="number"
            inputMode="numeric"
            min={1}
            max={MAX_BATCH_COUNT}
            step={1}
            value={batchCount ?? "1"}
            title="Jobs queued by one Generate, one after the other"
            aria-invalid={invalid("batch_count")}
            onChange={(e) => onBatchCountChange(e.target.value)}
          />
        </div>
      )}
      <label className="check" title="A rough picture of the image every few steps, at almost no cost">
        <input
          type="checkbox"
          name="preview"
          checked={settings.livePreview}
          onChange={(e) => onChange({ livePreview: e.target.checked })}
        />{" "}
        Live preview
      </label>
    </fieldset>
  );
}
