/** The page: prompt and parameters on one side, progress, image and gallery on the other. */
import { useEffect, useMemo, useState, type FormEvent } from "react";
import { ApiError } from "@sd-worker/sdk";
import { loadApiKey, saveApiKey } from "./client";
import { ApiKeyField } from "./components/ApiKeyField";
import { ErrorMessage } from "./components/ErrorMessage";
import { Gallery } from "./components/Gallery";
import { GenerationProgress } from "./components/GenerationProgress";
import { ImageDisplay } from "./components/ImageDisplay";
import { ParameterControls } from "./components/ParameterControls";
import { PromptInput } from "./components/PromptInput";
import { describeDetail, describeError } from "./errors";
import { useGallery } from "./hooks/useGallery";
import { useImageGeneration, type GalleryEntry } from "./hooks/useImageGeneration";
import { useWorkerInfo } from "./hooks/useWorkerInfo";
import { EMPTY_SETTINGS, fromParams, toRequest, withDefaults, type GenerationSettings } from "./settings";

/** The whole app. */
export function App() {
  const worker = useWorkerInfo();
  const gallery = useGallery();
  const [settings, setSettings] = useState<GenerationSettings>(EMPTY_SETTINGS);
  const [selected, setSelected] = useState<string | null>(null);
  const generation = useImageGeneration({
    onComplete: (entry) => {
      gallery.add(entry);
      setSelected(entry.jobId);
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
  const requestError = generation.requestError && !unauthorized ? describeError(generation.requestError) : null;
  const jobError = generation.job.error ? describeDetail(generation.job.error) : null;
  const streamError = generation.job.streamError ? describeError(generation.job.streamError) : null;
  const shown = useMemo(
    () => gallery.entries.find((e) => e.jobId === selected) ?? gallery.entries[0] ?? null,
    [gallery.entries, selected],
  );

  const patch = (change: Partial<GenerationSettings>) => setSettings((s) => ({ ...s, ...change }));
  const submit = (event?: FormEvent) => {
    event?.preventDefault();
    if (!generation.busy) void generation.generate(toRequest(settings));
  };
  const useSettings = (entry: GalleryEntry) => setSettings(fromParams(entry.params));
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
          {requestError && <ErrorMessage error={requestError} onDismiss={generation.clearError} />}
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
              key={shown.jobId}
              entry={shown}
              onReuseSeed={(seed) => patch({ seedMode: "fixed", seed: String(seed) })}
              onUseSettings={useSettings}
            />
          ) : (
            !generation.jobId && <p className="placeholder">Your image will appear here.</p>
          )}
          <Gallery
            entries={gallery.entries}
            selected={shown?.jobId ?? null}
            onSelect={(entry) => setSelected(entry.jobId)}
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
