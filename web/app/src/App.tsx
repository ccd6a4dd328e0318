/** The page: prompt and parameters on one side, progress, image and gallery on the other. */
import { useEffect, useMemo, useState, type FormEvent } from "react";
import { ApiError } from "@sd-worker/sdk";
import { loadApiKey, saveApiKey } from "./client";
import { ApiKeyField } from "./components/ApiKeyField";
import { ErrorMessage } from "./components/ErrorMessage";
import { Gallery } from "./components/Gallery";
import { GenerationProgress } from "./components/GenerationProgress";
import { ImageDisplay } from "./components/ImageDisplay";
import { ImageInputs } from "./components/ImageInputs";
import { ModeSwitch } from "./components/ModeSwitch";
import { ParameterControls } from "./components/ParameterControls";
import { PromptInput } from "./components/PromptInput";
import { PICTURE_FIELDS, describeDetail, describeError, type ShownError } from "./errors";
import { useGallery } from "./hooks/useGallery";
import { entryKey, useImageGeneration, type GalleryEntry } from "./hooks/useImageGeneration";
import { useImageInputs } from "./hooks/useImageInputs";
import { useWorkerInfo } from "./hooks/useWorkerInfo";
import { outputSize, pictureFromResult, type Picture } from "./images";
import {
  DEFAULT_STRENGTH,
  EMPTY_SETTINGS,
  fromParams,
  missingPicture,
  toRequest,
  withDefaults,
  type GenerationSettings,
  type Mode,
} from "./settings";

/** The whole app. */
export function App() {
  const worker = useWorkerInfo();
  const gallery = useGallery();
  const [settings, setSettings] = useState<GenerationSettings>(EMPTY_SETTINGS);
  const [selected, setSelected] = useState<string | null>(null);
  const inputs = useImageInputs();
  const [formError, setFormError] = useState<ShownError | null>(null);
  const generation = useImageGeneration({
    onComplete: (entry) => {
      gallery.add(entry);
      setSelected(entryKey(entry));
    },
  });

  const info = worker.info;
  useEffect(() => {
    if (info) setSettings((s) => withDefaults(s, info));
  }, [info]);

  // On a phone the progress sits below the form: bring it into view when a job starts.
  useEffect(() => {
    if (generation.jobId) document.getElementById("progress")?.scrollIntoView?.({ block: "nearest" });
  }, [generation.jobId]);

  const unauthorized = generation.requestError instanceof ApiError && generation.requestError.status === 401;
  const needsKey = worker.needsKey || unauthorized;
  const apiError = generation.requestError && !unauthorized ? describeError(generation.requestError) : null;
  const requestError = formError ?? apiError;
  const imageMode = settings.mode !== "text";
  const pictureError = imageMode && requestError && PICTURE_FIELDS.has(requestError.field ?? "") ? requestError : null;
  const clearErrors = () => {
    setFormError(null);
    generation.clearError();
  };
  const jobError = generation.job.error ? describeDetail(generation.job.error) : null;
  const streamError = generation.job.streamError ? describeError(generation.job.streamError) : null;
  const shown = useMemo(
    () => gallery.entries.find((e) => entryKey(e) === selected) ?? gallery.entries[0] ?? null,
    [gallery.entries, selected],
  );

  // A new picture or mask answers the form's "missing picture" and the worker's complaint about the old one.
  const { clearError } = generation;
  useEffect(() => {
    setFormError(null);
    if (generation.requestError instanceof ApiError && PICTURE_FIELDS.has(generation.requestError.field ?? "")) clearError();
    // Only a change of picture clears these errors, so the other values stay out of the dependencies.
  }, [inputs.image, inputs.mask]);

  const patch = (change: Partial<GenerationSettings>) => setSettings((s) => ({ ...s, ...change }));
  const submit = (event?: FormEvent) => {
    event?.preventDefault();
    if (generation.busy) return;
    const missing = missingPicture(settings, inputs);
    if (missing) {
      generation.clearError();
      setFormError({ title: "Missing picture", message: missing.message, field: missing.field, status: null, code: null });
      return;
    }
    setFormError(null);
    void generation.generate(toRequest(settings, inputs));
  };
  const useSettings = (entry: GalleryEntry) => setSettings((s) => fromParams(entry.params, s));
  const limits = info?.limits;
  const matchSize = (width: number, height: number) => patch({ width: String(width), height: String(height) });
  const takeSize = (picture: Picture) => {
    const size = outputSize(picture.width, picture.height, limits?.size_multiple ?? 8, limits?.max_size);
    matchSize(size.width, size.height);
  };
  const switchMode = (mode: Mode) => {
    clearErrors();
    setSettings((s) => (mode === "text" || mode === s.mode ? { ...s, mode } : { ...s, mode, strength: DEFAULT_STRENGTH[mode] }));
    if (mode !== "text" && inputs.image) takeSize(inputs.image);
  };
  const pickImage = async (file: File) => {
    const picture = await inputs.pickImage(file);
    if (picture) takeSize(picture);
  };
  const useAsInput = (entry: GalleryEntry) => {
    const picture = pictureFromResult(entry.result, `result (seed ${entry.result.seed})`);
    inputs.setImage(picture);
    takeSize(picture);
    if (settings.mode === "text") switchMode("image");
    requestAnimationFrame(() => document.getElementById("image-inputs")?.scrollIntoView?.({ block: "nearest" }));
  };
  const saveKey = (key: string) => {
    saveApiKey(key);
    generation.clearError();
    worker.reload();
  };

  return (
    <div className="app">
      <header className="topbar">
        <h1>sd-worker</h1>
        <WorkerBadge worker={worker} />
      </header>
      {needsKey && <ApiKeyField hadKey={loadApiKey() !== null} onSave={saveKey} />}
      {!needsKey && worker.error !== null && (
        <div className="banner">
          <ErrorMessage error={describeError(worker.error)} />
        </div>
      )}
      {info && !info.ready && (
        <p className="banner loading" role="status">
          Loading the model… the page will be ready when it is.
        </p>
      )}
      <main className="layout">
        <form className="controls" onSubmit={submit} noValidate aria-label="Generation settings">
          <ModeSwitch mode={settings.mode} onChange={switchMode} />
          <PromptInput
            prompt={settings.prompt}
            negativePrompt={settings.negativePrompt}
            onPromptChange={(prompt) => patch({ prompt })}
            onNegativePromptChange={(negativePrompt) => patch({ negativePrompt })}
            onGenerate={() => submit()}
            busy={generation.busy}
            disabled={needsKey}
            invalidField={requestError?.field}
          />
          {requestError && !pictureError && <ErrorMessage error={requestError} onDismiss={clearErrors} />}
          {settings.mode !== "text" && (
            <ImageInputs
              mode={settings.mode}
              inputs={inputs}
              onImageFile={(file) => void pickImage(file)}
              strength={settings.strength}
              onStrengthChange={(strength) => patch({ strength })}
              steps={settings.steps}
              width={settings.width}
              height={settings.height}
              onMatchSize={matchSize}
              limits={limits}
              error={pictureError}
              onDismissError={clearErrors}
            />
          )}
          <ParameterControls settings={settings} onChange={patch} info={info} invalidField={requestError?.field} />
        </form>
        <div className="output">
          {generation.jobId && (
            <GenerationProgress job={generation.job} onCancel={generation.cancel} cancelling={generation.cancelling} />
          )}
          {jobError && <ErrorMessage error={jobError} />}
          {streamError && <ErrorMessage error={streamError} />}
          {shown ? (
            <ImageDisplay
              key={entryKey(shown)}
              entry={shown}
              onReuseSeed={(seed) => patch({ seedMode: "fixed", seed: String(seed) })}
              onUseSettings={useSettings}
              onUseAsInput={useAsInput}
            />
          ) : (
            !generation.jobId && <p className="placeholder">Your image will appear here.</p>
          )}
          <Gallery
            entries={gallery.entries}
            selected={shown ? entryKey(shown) : null}
            onSelect={(entry) => setSelected(entryKey(entry))}
            onClear={() => {
              gallery.clear();
              setSelected(null);
            }}
          />
        </div>
      </main>
    </div>
  );
}

function WorkerBadge({ worker }: { worker: ReturnType<typeof useWorkerInfo> }) {
  const info = worker.info;
  if (!info) return <p className="badge">{worker.needsKey ? "Locked" : "Connecting…"}</p>;
  return (
    <p className="badge" title={info.model}>
      <span className={`dot ${info.ready ? "ready" : "loading"}`} aria-hidden="true" />
      <span className="sr-only">{info.ready ? "Ready" : "Loading"}: </span>
      <span className="model">{info.model.split("/").pop()}</span>
      <span className="meta">
        {info.family ?? "…"} · {info.backend} {info.dtype}
      </span>
    </p>
  );
}
