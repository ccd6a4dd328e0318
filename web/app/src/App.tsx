/** The page: prompt and parameters on one side, progress, image and gallery on the other. */
import { useEffect, useMemo, useRef, useState, type ClipboardEvent, type DragEvent, type FormEvent } from "react";
import { ApiError } from "@sd-worker/sdk";
import { loadApiKey, saveApiKey, useClient } from "./client";
import { ApiKeyField } from "./components/ApiKeyField";
import { ErrorMessage } from "./components/ErrorMessage";
import { Gallery } from "./components/Gallery";
import { GenerationProgress } from "./components/GenerationProgress";
import { ImageDisplay } from "./components/ImageDisplay";
import { ImageInputs } from "./components/ImageInputs";
import { Lightbox } from "./components/Lightbox";
import { ModeSwitch } from "./components/ModeSwitch";
import { ModelExtras, insertWord } from "./components/ModelExtras";
import { ParameterControls } from "./components/ParameterControls";
import { PromptInput } from "./components/PromptInput";
import { QueuePanel } from "./components/QueuePanel";
import { PICTURE_FIELDS, describeDetail, describeError, type ShownError } from "./errors";
import { checkForm } from "./formCheck";
import { loadForm, saveForm } from "./formStorage";
import { GALLERY_LIMIT, GALLERY_WARN_AT, useGallery } from "./hooks/useGallery";
import { useConnection, type Connection } from "./hooks/useConnection";
import { useJobList } from "./hooks/useJobList";
import { useLibrary } from "./hooks/useLibrary";
import { entryKey, useImageGeneration, type GalleryEntry } from "./hooks/useImageGeneration";
import { useImageInputs } from "./hooks/useImageInputs";
import { useWorkerInfo } from "./hooks/useWorkerInfo";
import { outputSize, pictureFromResult, type Picture } from "./images";
import { blendInpainting } from "./maskBlur";
import { parseA1111, settingsFromFile } from "./pngSettings";
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
  const client = useClient();
  const worker = useWorkerInfo();
  const connection = useConnection();
  const gallery = useGallery();
  const stored = useMemo(loadForm, []);
  const [settings, setSettings] = useState<GenerationSettings>(() => {
    const restored = { ...EMPTY_SETTINGS, ...stored.settings };
    return Array.isArray(restored.loras) ? restored : { ...restored, loras: [] };
  });
  const [batchCount, setBatchCount] = useState(stored.batchCount);
  const [selected, setSelected] = useState<string | null>(null);
  const [fullScreen, setFullScreen] = useState<number | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [cancellingJobs, setCancellingJobs] = useState<ReadonlySet<string>>(new Set());
  const inputs = useImageInputs();
  const [formError, setFormError] = useState<ShownError | null>(null);
  const [maskBlur, setMaskBlur] = useState(0);
  // Counts finished images, to bring the newest into view.
  const [finished, setFinished] = useState(0);
  // Inpainting jobs with a mask blur: what to lay their results over, by job id.
  const blends = useRef(new Map<string, { image: Picture; mask: Picture; blur: number }>());
  // Images are added in order, after any blending before them.
  const adding = useRef(Promise.resolve());
  const generation = useImageGeneration({
    onComplete: (entry) => {
      const blend = blends.current.get(entry.jobId);
      adding.current = adding.current.then(async () => {
        let shown = entry;
        if (blend) {
          try {
            shown = { ...entry, result: await blendInpainting(entry.result, blend.image, blend.mask, blend.blur) };
          } catch {
            // Without a canvas the worker's result stays as it is.
          }
        }
        gallery.add(shown);
        setSelected(entryKey(shown));
        setFinished((n) => n + 1);
      });
    },
  });

  const info = worker.info;
  const library = useLibrary(info);
  useEffect(() => {
    if (info) setSettings((s) => withDefaults(s, info));
  }, [info]);
  useEffect(() => saveForm({ settings, batchCount }), [settings, batchCount]);

  // Back online: read the worker's info again and follow the current job again.
  const wasOffline = useRef(false);
  const { reload } = worker;
  const { resume } = generation;
  useEffect(() => {
    if (connection.state === "offline") wasOffline.current = true;
    if (connection.state === "online" && wasOffline.current) {
      wasOffline.current = false;
      reload();
      resume();
    }
  }, [connection.state, reload, resume]);

  // On a phone the image sits below the form: bring a finished one into view.
  useEffect(() => {
    if (finished > 0) document.getElementById("result")?.scrollIntoView?.({ block: "nearest" });
  }, [finished]);

  // On a phone the progress sits below the form: bring it into view when a job starts.
  useEffect(() => {
    if (generation.jobId) document.getElementById("progress")?.scrollIntoView?.({ block: "nearest" });
  }, [generation.jobId]);

  const isUnauthorized = (error: unknown) => error instanceof ApiError && error.status === 401;
  const unauthorized = isUnauthorized(generation.requestError) || isUnauthorized(generation.job.streamError);
  const needsKey = worker.needsKey || unauthorized;
  const offline = connection.state === "offline";
  const jobList = useJobList(!needsKey && info !== null);
  const mine = useMemo(
    () => new Set([generation.jobId, ...generation.waiting.map((j) => j.jobId)].filter((id): id is string => id !== null)),
    [generation.jobId, generation.waiting],
  );
  const apiError = generation.requestError && !unauthorized ? describeError(generation.requestError) : null;
  const requestError = formError ?? apiError;
  const imageMode = settings.mode !== "text";
  const pictureError = imageMode && requestError && PICTURE_FIELDS.has(requestError.field ?? "") ? requestError : null;
  const clearErrors = () => {
    setFormError(null);
    generation.clearError();
  };
  const jobError = generation.job.error ? describeDetail(generation.job.error) : null;
  // While the worker is unreachable the badge says so, in one place.
  const streamError =
    generation.job.streamError && !offline && !unauthorized ? describeError(generation.job.streamError) : null;
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
  const submit = async (event?: FormEvent) => {
    event?.preventDefault();
    if (generation.submitting) return;
    const problem = checkForm(settings, limits, batchCount);
    if (problem) {
      generation.clearError();
      setFormError({ title: `Check ${problem.label}`, message: problem.message, field: problem.field, status: null, code: null });
      return;
    }
    const missing = missingPicture(settings, inputs);
    if (missing) {
      generation.clearError();
      setFormError({ title: "Missing picture", message: missing.message, field: missing.field, status: null, code: null });
      return;
    }
    setFormError(null);
    // A batch count of N queues N jobs; with a fixed seed each starts where the one before ended.
    const request = toRequest(settings, inputs);
    const perJob = Number(settings.numImages) || 1;
    for (let i = 0; i < Number(batchCount); i++) {
      const seeded = i > 0 && request.seed !== undefined && request.seed !== null ? { ...request, seed: request.seed + i * perJob } : request;
      const jobId = await generation.generate(seeded);
      if (!jobId) break;
      if (settings.mode === "inpaint" && maskBlur > 0 && inputs.image && inputs.mask) {
        blends.current.set(jobId, { image: inputs.image, mask: inputs.mask, blur: maskBlur });
      }
    }
  };
  const cancelJob = async (jobId: string) => {
    if (jobId === generation.jobId) {
      void generation.cancel();
      return;
    }
    setCancellingJobs((set) => new Set([...set, jobId]));
    try {
      await client.cancel(jobId);
    } catch {
      // Ended meanwhile, or the worker is gone: the listing shows what is true.
    }
    setCancellingJobs((set) => new Set([...set].filter((id) => id !== jobId)));
    jobList.refresh();
  };
  const applySettings = (read: Partial<GenerationSettings> | null, source: string) => {
    if (!read) {
      setNotice(`No generation settings found in ${source}.`);
      return;
    }
    setSettings((s) => ({ ...s, ...read }));
    setNotice(`Settings read from ${source}.`);
  };
  const onDrop = async (event: DragEvent) => {
    // Drops on a picture zone are theirs; elsewhere a PNG or text file fills the form.
    if (event.defaultPrevented) return;
    const file = event.dataTransfer.files[0];
    if (!file) return;
    event.preventDefault();
    applySettings(await settingsFromFile(file), file.name || "the dropped file");
  };
  const onPaste = async (event: ClipboardEvent) => {
    const file = event.clipboardData.files[0];
    if (file && file.type === "image/png") {
      event.preventDefault();
      applySettings(await settingsFromFile(file), "the pasted picture");
      return;
    }
    const text = event.clipboardData.getData("text/plain");
    const read = text.includes("Steps:") ? parseA1111(text) : null;
    if (read) {
      event.preventDefault();
      applySettings(read, "the pasted text");
    }
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
    if (!picture) return;
    const size = outputSize(picture.width, picture.height, limits?.size_multiple ?? 8, limits?.max_size);
    const max = limits?.max_size;
    if (max && (picture.width > max || picture.height > max)) {
      const shrink = window.confirm(
        `${picture.name} is ${picture.width}×${picture.height} pixels, larger than this worker makes (${max} a side). ` +
          `Shrink it to ${size.width}×${size.height}?`,
      );
      if (!shrink) {
        inputs.setImage(null);
        return;
      }
    }
    takeSize(picture);
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
    generation.resume();
    worker.reload();
  };

  const clearGallery = () => {
    const count = gallery.entries.length;
    if (!window.confirm(`Delete all ${count} image(s) from this browser's gallery? Download the ones to keep first.`)) return;
    gallery.clear();
    setSelected(null);
  };
  const shownIndex = shown ? gallery.entries.indexOf(shown) : -1;

  return (
    <div className="app" onDragOver={(event) => event.preventDefault()} onDrop={(event) => void onDrop(event)} onPaste={(event) => void onPaste(event)}>
      <header className="topbar">
        <h1>sd-worker</h1>
        <WorkerBadge worker={worker} connection={connection.state} />
      </header>
      {needsKey && <ApiKeyField hadKey={loadApiKey() !== null} onSave={saveKey} />}
      {!needsKey && !offline && worker.error !== null && (
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
        <form className="controls" onSubmit={(event) => void submit(event)} noValidate aria-label="Generation settings">
          <ModeSwitch mode={settings.mode} onChange={switchMode} />
          <PromptInput
            prompt={settings.prompt}
            negativePrompt={settings.negativePrompt}
            onPromptChange={(prompt) => patch({ prompt })}
            onNegativePromptChange={(negativePrompt) => patch({ negativePrompt })}
            onGenerate={() => void submit()}
            busy={generation.submitting}
            disabled={needsKey}
            invalidField={requestError?.field}
          />
          {requestError && !pictureError && <ErrorMessage error={requestError} onDismiss={clearErrors} />}
          {notice && (
            <p className="notice" role="status">
              {notice}{" "}
              <button type="button" className="link" onClick={() => setNotice(null)}>
                Dismiss
              </button>
            </p>
          )}
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
              maskBlur={maskBlur}
              onMaskBlurChange={setMaskBlur}
            />
          )}
          <ModelExtras
            loras={library.loras}
            embeddings={library.embeddings}
            chosen={settings.loras}
            onChosenChange={(loras) => patch({ loras })}
            onInsert={(word, negative) =>
              setSettings((s) =>
                negative ? { ...s, negativePrompt: insertWord(s.negativePrompt, word) } : { ...s, prompt: insertWord(s.prompt, word) },
              )
            }
            invalidField={requestError?.field}
            disabled={needsKey}
          />
          <ParameterControls
            settings={settings}
            onChange={patch}
            info={info}
            invalidField={requestError?.field}
            batchCount={batchCount}
            onBatchCountChange={setBatchCount}
          />
        </form>
        <div className="output">
          {generation.jobId && (
            <GenerationProgress
              job={generation.job}
              onCancel={generation.cancel}
              cancelling={generation.cancelling}
              waiting={generation.waiting.length}
            />
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
              onFullScreen={shownIndex >= 0 ? () => setFullScreen(shownIndex) : undefined}
            />
          ) : (
            !generation.jobId && <p className="placeholder">Your image will appear here.</p>
          )}
          <QueuePanel list={jobList.list} mine={mine} onCancel={(id) => void cancelJob(id)} cancelling={cancellingJobs} />
          <Gallery
            entries={gallery.entries}
            selected={shown ? entryKey(shown) : null}
            onSelect={(entry) => setSelected(entryKey(entry))}
            onClear={clearGallery}
            warning={
              gallery.entries.length >= GALLERY_WARN_AT
                ? `The gallery keeps the newest ${GALLERY_LIMIT} images in this browser: each new image now drops the oldest. Download the ones to keep.`
                : null
            }
          />
        </div>
      </main>
      {fullScreen !== null && (
        <Lightbox
          entries={gallery.entries}
          index={Math.min(fullScreen, gallery.entries.length - 1)}
          onMove={(index) => {
            setFullScreen(index);
            const entry = gallery.entries[index];
            if (entry) setSelected(entryKey(entry));
          }}
          onClose={() => setFullScreen(null)}
        />
      )}
    </div>
  );
}

/** The worker's model and state: green when ready, amber while loading, grey and "Reconnecting…" when it does not answer. */
function WorkerBadge({ worker, connection }: { worker: ReturnType<typeof useWorkerInfo>; connection: Connection }) {
  const info = worker.info;
  if (connection === "offline") {
    return (
      <p className="badge offline" data-state="offline" role="status">
        <span className="dot offline" aria-hidden="true" />
        Worker unreachable · Reconnecting…
      </p>
    );
  }
  if (!info) return <p className="badge" data-state="connecting">{worker.needsKey ? "Locked" : "Connecting…"}</p>;
  return (
    <p className="badge" title={info.model} data-state={info.ready ? "ready" : "loading"}>
      <span className={`dot ${info.ready ? "ready" : "loading"}`} aria-hidden="true" />
      <span className="sr-only">{info.ready ? "Ready" : "Loading"}: </span>
      <span className="model">{info.model.split("/").pop()}</span>
      <span className="meta">
        {info.family ?? "…"} · {info.backend} {info.dtype}
      </span>
    </p>
  );
}
