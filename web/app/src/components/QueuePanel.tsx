/** The worker's queue: every tab's and client's jobs, with their state and a Cancel for unfinished ones. */
import type { JobList, JobSummary } from "@sd-worker/sdk";

/** Props of {@link QueuePanel}. */
export interface QueuePanelProps {
  /** The worker's listing; nothing shows before it. */
  list: JobList | null;
  /** The ids of the jobs this browser submitted. */
  mine: ReadonlySet<string>;
  onCancel: (jobId: string) => void;
  /** Jobs whose cancellation is on its way. */
  cancelling: ReadonlySet<string>;
}

/** How many finished jobs the panel lists under the unfinished ones. */
const FINISHED_SHOWN = 5;

function stateText(job: JobSummary): string {
  switch (job.state) {
    case "queued":
      return job.queue_position ? `Queued #${job.queue_position}` : "Queued";
    case "running":
      return job.step != null && job.total ? `Running ${job.step}/${job.total}` : "Starting";
    case "completed":
      return "Done";
    case "failed":
      return "Failed";
    case "cancelled":
      return "Cancelled";
    default:
      return job.state;
  }
}

/** The queue, newest finished jobs last. */
export function QueuePanel({ list, mine, onCancel, cancelling }: QueuePanelProps) {
  if (!list) return null;
  const unfinished = list.jobs.filter((j) => j.state === "queued" || j.state === "running");
  const finished = list.jobs.filter((j) => !unfinished.includes(j)).slice(0, FINISHED_SHOWN);
  const shown = [...unfinished, ...finished];
  const running = unfinished.length - unfinished.filter((j) => j.state === "queued").length;
  const unlisted = list.queued - (unfinished.length - running);
  return (
    <section className="queue" aria-labelledby="queue-title">
      <h2 id="queue-title">Queue ({running + list.queued})</h2>
      {shown.length === 0 ? (
        <p className="hint">No jobs on the worker.</p>
      ) : (
        <ul className="queue-list">
          {shown.map((job) => {
            const open = job.state === "queued" || job.state === "running";
            const prompt = job.params.prompt.length > 80 ? `${job.params.prompt.slice(0, 79)}…` : job.params.prompt;
            return (
              <li key={job.job_id} className={`queue-item state-${job.state}`} data-testid="queue-item">
                <span className="queue-state">{stateText(job)}</span>
                <span className="queue-prompt" title={job.params.prompt}>
                  {prompt}
                </span>
                <span className="queue-meta">
                  {job.params.width}×{job.params.height} · {job.params.steps} steps
                  {job.params.num_images > 1 ? ` · ${job.params.num_images} images` : ""}
                  {mine.has(job.job_id) ? " · this browser" : ""}
                </span>
                {open && (
                  <button
                    type="button"
                    className="danger"
                    disabled={cancelling.has(job.job_id) || job.cancel_requested}
                    aria-label={`Cancel “${prompt}”`}
                    onClick={() => onCancel(job.job_id)}
                  >
                    {cancelling.has(job.job_id) || job.cancel_requested ? "Cancelling…" : "Cancel"}
                  </button>
                )}
              </li>
            );
          })}
        </ul>
      )}
      {unlisted > 0 && <p className="hint">and {unlisted} more queued.</p>}
    </section>
  );
}
