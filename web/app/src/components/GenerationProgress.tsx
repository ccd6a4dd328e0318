/** The current job's progress bar, step counter, elapsed time, live preview and Cancel button. */
import type { JobStatusState } from "../hooks/useJobStatus";
import { currentImage, isFinished } from "../hooks/jobView";

/** Props of {@link GenerationProgress}. */
export interface GenerationProgressProps {
  job: JobStatusState;
  /** Asks the worker to cancel the job; the button shows while it is queued or running. */
  onCancel: () => void;
  /** A cancellation is on its way. */
  cancelling: boolean;
  /** This browser's jobs waiting after this one. */
  waiting?: number;
}

/** "4.2 s", or "1 min 03 s" past a minute. */
export function formatElapsed(ms: number): string {
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${String(Math.floor(seconds % 60)).padStart(2, "0")} s`;
}

function statusText(job: JobStatusState, cancelling: boolean): string {
  switch (job.phase) {
    case "connecting":
      return "Submitted, waiting for the worker…";
    case "queued":
      return job.queuePosition && job.queuePosition > 1
        ? `Queued: ${job.queuePosition - 1} job(s) ahead`
        : "Queued: next to run";
    case "running": {
      if (cancelling) return "Cancelling…";
      if (job.step === 0) return "Starting…";
      const image = currentImage(job);
      const which = image ? ` image ${image.index} of ${image.count},` : "";
      return `Generating:${which} step ${job.step} of ${job.total ?? "?"}`;
    }
    case "completed":
      return "Done";
    case "failed":
      return "Failed";
    case "cancelled":
      return job.cancelledBy === "shutdown" ? "Cancelled: the worker shut down" : "Cancelled";
    default:
      return "";
  }
}

/** Live progress of one job. The status line is an aria-live region. */
export function GenerationProgress({ job, onCancel, cancelling, waiting = 0 }: GenerationProgressProps) {
  const percent = Math.round(job.percent);
  const finished = isFinished(job.phase);
  const canCancel = !finished && job.phase !== "connecting" && !job.streamError;
  return (
    <section id="progress" className={`progress phase-${job.phase}`} aria-label="Generation progress">
      <div className="progress-head">
        <p className="progress-status" role="status" aria-live="polite" aria-atomic="true">
          {statusText(job, cancelling)}
        </p>
        {canCancel && (
          <button type="button" className="danger" onClick={onCancel} disabled={cancelling}>
            {cancelling ? "Cancelling…" : "Cancel"}
          </button>
        )}
      </div>
      <progress
        className="progress-bar"
        max={100}
        value={percent}
        aria-label="Progress"
        aria-valuetext={`${percent} %`}
      />
      <dl className="progress-numbers">
        <div>
          <dt>Step</dt>
          <dd data-testid="step-counter">
            {job.step} / {job.total ?? "–"}
          </dd>
        </div>
        <div>
          <dt>Progress</dt>
          <dd data-testid="percent">{percent} %</dd>
        </div>
        <div>
          <dt>Elapsed</dt>
          <dd data-testid="elapsed">{formatElapsed(job.elapsedMs)}</dd>
        </div>
      </dl>
      {job.preview && !finished && (
        <img
          className="progress-preview"
          src={job.preview.data_url}
          width={job.preview.width}
          height={job.preview.height}
          alt={`Live preview after step ${job.step}`}
        />
      )}
      {waiting > 0 && (
        <p className="hint" data-testid="waiting">
          {waiting} more job(s) of yours wait after this one.
        </p>
      )}
    </section>
  );
}
