//! The loop that feeds this worker's engine from the shared queue.
//!
//! One job at a time: when the engine is idle and its local queue empty, the
//! loop first takes over a job whose worker went silent for `--claim-after`
//! (`XAUTOCLAIM`), else reads the next new one (`XREADGROUP`). It marks the
//! job started ([`scripts::START`], which counts the attempt), validates the
//! stored request against this worker's model, and hands an ordinary
//! [`Job`] to the engine thread. While the job runs, its events are copied
//! into Redis in order ([`scripts::APPEND`]; a write that fails is retried
//! until Redis answers again, so nothing is dropped), the claim is renewed
//! every quarter of `--claim-after`, and the cancel flag is polled. Only when
//! the terminal event is written is the queue entry acknowledged.
//!
//! A job taken over from a dead worker runs again from its beginning with the
//! same stored request (so the same seed), after a `restarted` event; one
//! started more than `--max-attempts` times fails instead. A job this worker
//! gives up because it is shutting down is neither ended nor acknowledged: a
//! live worker takes it over after `--claim-after`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamReadReply};
use redis::RedisError;
use sd_contract::event::CancelReason;
use sd_contract::{ErrorCode, ErrorDetail, JobEvent, JobRequest};

use super::{events_key, job_key, scripts, RedisQueue, EVENTS_MAXLEN, GROUP};
use crate::jobs::Job;
use crate::queue::PushError;
use crate::state::{AppState, Phase};
use crate::validation::validate;

/// How long one read of the queue waits for a job, at most: under half of
/// `--claim-after`, so a dead worker's job is taken over in time.
const BLOCK: Duration = Duration::from_secs(2);

/// Starts the loop that runs the shared queue's jobs on this worker's
/// engine, once the model has loaded; it stops when the worker stops.
pub fn spawn_consumer(state: AppState, queue: Arc<RedisQueue>) {
    tokio::spawn(async move { consume(state, queue).await });
}

/// An entry read from the queue: its stream id and the job it names.
struct Entry {
    id: String,
    job: Option<String>,
}

/// Growing waits between retries: 100 ms doubling up to 2 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(Duration::from_millis(100))
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(2));
    }
}

async fn consume(state: AppState, queue: Arc<RedisQueue>) {
    let mut phase = state.watch_phase();
    let _ = phase.wait_for(|p| *p != Phase::Loading).await;
    if state.phase() != Phase::Ready {
        return;
    }
    tracing::info!(queue = %queue.queue_key, worker = %queue.worker_id, "taking jobs from the shared queue");
    let mut reader = None;
    let mut backoff = Backoff::new();
    let mut group_made = false;
    while state.phase() == Phase::Ready {
        if state.is_busy() {
            state.wait_idle().await;
            continue;
        }
        if !state.queue().is_empty() {
            // A job of this worker's own (OpenAI, A1111) is about to start.
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        if !group_made {
            match queue.make_group().await {
                Ok(()) => group_made = true,
                Err(error) => {
                    queue.record(&error);
                    backoff.wait().await;
                    continue;
                }
            }
        }
        match queue.next_entry(&mut reader).await {
            Ok(Some(entry)) => {
                backoff = Backoff::new();
                queue.run(&state, entry).await;
            }
            Ok(None) => backoff = Backoff::new(),
            Err(error) => {
                queue.record(&error);
                reader = None;
                // A Redis that restarted without its data has lost the group too.
                group_made = false;
                backoff.wait().await;
            }
        }
    }
    tracing::info!("stopped taking jobs from the shared queue");
}

/// How a job's run on this worker ended, as far as Redis is concerned.
enum Ending {
    /// Its terminal event is written: acknowledge the entry.
    Ended,
    /// Left for another worker (this one is stopping, or lost the job to a
    /// worker that took it over): leave the entry pending.
    Left,
}

impl RedisQueue {
    /// Creates the consumer group (and the queue) unless it exists.
    async fn make_group(&self) -> Result<(), RedisError> {
        let made: Result<(), RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.queue_key)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.conn())
            .await;
        match made {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// The next entry to run: one a silent worker left, else a new one.
    async fn next_entry(
        &self,
        reader: &mut Option<MultiplexedConnection>,
    ) -> Result<Option<Entry>, RedisError> {
        let claimed: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&self.queue_key)
            .arg(GROUP)
            .arg(&self.worker_id)
            .arg(self.config.claim_after.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn())
            .await?;
        if let Some(entry) = claimed.claimed.into_iter().next() {
            let job = entry.get::<String>("job");
            tracing::warn!(entry = %entry.id, job = ?job, "taking over a job whose worker went silent");
            return Ok(Some(Entry { id: entry.id, job }));
        }
        let block = BLOCK.min(self.config.claim_after / 2);
        let conn = match reader {
            Some(conn) => conn,
            None => reader.insert(self.dedicated(block).await?),
        };
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.worker_id)
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.queue_key)
            .arg(">")
            .query_async(conn)
            .await?;
        self.reached();
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .next()
            .map(|entry| Entry {
                job: entry.get::<String>("job"),
                id: entry.id,
            }))
    }

    /// Runs one entry's job on this worker and settles the entry.
    async fn run(&self, state: &AppState, entry: Entry) {
        let Some(id) = entry.job.clone() else {
            self.ack(&entry.id).await;
            return;
        };
        if state.phase() != Phase::Ready {
            // Read as the worker began to stop: left pending, untouched, for another.
            return;
        }
        let Some(started) = self.start(state, &id).await else {
            return;
        };
        let (previous, attempt, cancel, logged) = started;
        if previous == "gone" || previous == "ended" {
            self.ack(&entry.id).await;
            return;
        }
        let mut writer = Writer {
            queue: self,
            id: id.clone(),
            entry: entry.id.clone(),
            attempt,
            next: logged,
        };
        let ending = self
            .run_attempt(state, &mut writer, attempt, cancel.as_deref())
            .await;
        if let Ending::Ended = ending {
            self.ack(&entry.id).await;
        }
    }

    async fn run_attempt(
        &self,
        state: &AppState,
        writer: &mut Writer<'_>,
        attempt: u32,
        cancel: Option<&str>,
    ) -> Ending {
        let id = writer.id.clone();
        if attempt > self.config.max_attempts {
            tracing::error!(job = %id, attempt, "the job's workers kept stopping: failing it");
            let error = ErrorDetail::new(
                ErrorCode::GenerationFailed,
                format!(
                    "the job was started {} times and the worker running it stopped each time \
                     (--max-attempts {}); it is not run again",
                    attempt - 1,
                    self.config.max_attempts
                ),
            );
            return writer.end(&JobEvent::Error(error)).await;
        }
        if attempt > 1 {
            tracing::warn!(job = %id, attempt, "restarting a job from its beginning");
            let restarted = JobEvent::Restarted {
                attempt,
                worker_id: self.worker_id.clone(),
            };
            if !writer.append(&restarted, None, None).await {
                return Ending::Left;
            }
        }
        let job = match self.prepare(state, &id).await {
            Ok(Some(job)) => job,
            // Stopping: left pending for another worker.
            Ok(None) => return Ending::Left,
            Err(detail) => return writer.end(&JobEvent::Error(detail)).await,
        };
        if cancel.is_some() {
            job.request_cancel(CancelReason::Client);
        }
        state.jobs().insert(Arc::clone(&job));
        loop {
            match state.queue().push(Arc::clone(&job)) {
                Ok(_) => break,
                Err(PushError::Full) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(PushError::Closed) => {
                    job.finish_cancelled(CancelReason::Shutdown);
                    return Ending::Left;
                }
            }
        }
        self.mirror(&job, writer).await
    }

    /// Marks the job started by this worker; `None` when the worker stops
    /// before Redis answers.
    async fn start(
        &self,
        state: &AppState,
        id: &str,
    ) -> Option<(String, u32, Option<String>, usize)> {
        let mut backoff = Backoff::new();
        loop {
            let started: Result<(String, u32, String, usize), _> = scripts::START
                .key(job_key(id))
                .key(&self.counter_key)
                .arg(&self.worker_id)
                .invoke_async(&mut self.conn())
                .await;
            match started {
                Ok((previous, attempt, cancel, logged)) => {
                    let cancel = Some(cancel).filter(|c| !c.is_empty());
                    return Some((previous, attempt, cancel, logged));
                }
                Err(error) => self.record(&error),
            }
            if state.phase() != Phase::Ready {
                return None;
            }
            backoff.wait().await;
        }
    }

    /// The stored request, validated against this worker's model, as a job
    /// for the engine (`None` when the worker is stopping); an error names
    /// the field that this worker refuses.
    async fn prepare(&self, state: &AppState, id: &str) -> Result<Option<Arc<Job>>, ErrorDetail> {
        let mut backoff = Backoff::new();
        let (stored, submitted_ms): (Option<String>, Option<u64>) = loop {
            match redis::cmd("HMGET")
                .arg(job_key(id))
                .arg("request")
                .arg("submitted_ms")
                .query_async(&mut self.conn())
                .await
            {
                Ok(fields) => break fields,
                Err(error) => self.record(&error),
            }
            backoff.wait().await;
        };
        // Clocks of other machines may run ahead: a wait never goes negative.
        let waited = Duration::from_millis(
            super::unix_millis().saturating_sub(submitted_ms.unwrap_or(u64::MAX)),
        );
        let internal = |message: String| ErrorDetail::new(ErrorCode::Internal, message);
        let stored = stored.ok_or_else(|| internal(format!("job {id} has no stored request")))?;
        let request: JobRequest = serde_json::from_str(&stored)
            .map_err(|e| internal(format!("job {id}: stored request: {e}")))?;
        let Ok((model, defaults)) = state.serving_model() else {
            return Ok(None);
        };
        let limits = state.limits();
        let lora_dir = state.config().lora_dir.clone();
        let valid = tokio::task::spawn_blocking(move || {
            validate(request, &model, &defaults, &limits, lora_dir.as_ref())
        })
        .await
        .map_err(|e| internal(format!("validating the request: {e}")))?
        .map_err(|e| e.detail())?;
        Ok(Some(state.shared_job(id.to_string(), valid, waited)))
    }

    /// Copies the job's events into Redis until it ends, renewing the claim
    /// and passing on a cancellation asked on any worker.
    async fn mirror(&self, job: &Arc<Job>, writer: &mut Writer<'_>) -> Ending {
        let mut events = Box::pin(job.subscribe(0));
        let mut cancel_poll = tokio::time::interval(Duration::from_millis(100));
        let mut renew = tokio::time::interval(self.config.claim_after / 4);
        loop {
            tokio::select! {
                next = events.next() => {
                    let Some((_, event)) = next else {
                        return Ending::Left;
                    };
                    let (step, total) = match event.as_ref() {
                        JobEvent::Queued { .. } => continue,
                        JobEvent::Cancelled { reason: CancelReason::Shutdown } => {
                            tracing::info!(job = job.id(), "stopping: the job is left for another worker");
                            return Ending::Left;
                        }
                        JobEvent::Progress { step, total, .. } => (Some(*step), Some(*total)),
                        JobEvent::Started { .. } => (None, job.status(None).total),
                        _ => (None, None),
                    };
                    if !writer.append(&event, step, total).await {
                        job.request_cancel(CancelReason::Shutdown);
                        return Ending::Left;
                    }
                    if event.is_terminal() {
                        return Ending::Ended;
                    }
                }
                _ = cancel_poll.tick() => {
                    if self.cancel_flag(job.id()).await {
                        job.request_cancel(CancelReason::Client);
                    }
                }
                _ = renew.tick() => {
                    if writer.renew().await == Some(false) {
                        tracing::warn!(job = job.id(), "another worker took the job over: stopping it here");
                        job.request_cancel(CancelReason::Shutdown);
                        return Ending::Left;
                    }
                }
            }
        }
    }

    /// Whether a cancellation was asked for the job (false when Redis does
    /// not answer: the next poll asks again).
    async fn cancel_flag(&self, id: &str) -> bool {
        let flag: Result<Option<String>, _> = redis::cmd("HGET")
            .arg(job_key(id))
            .arg("cancel")
            .query_async(&mut self.conn())
            .await;
        match flag {
            Ok(flag) => flag.is_some(),
            Err(error) => {
                self.record(&error);
                false
            }
        }
    }

    /// Acknowledges and deletes an entry whose job has ended, retrying until
    /// Redis answers.
    async fn ack(&self, entry: &str) {
        let mut backoff = Backoff::new();
        loop {
            let acked: Result<(i64, i64), _> = redis::pipe()
                .cmd("XACK")
                .arg(&self.queue_key)
                .arg(GROUP)
                .arg(entry)
                .cmd("XDEL")
                .arg(&self.queue_key)
                .arg(entry)
                .query_async(&mut self.conn())
                .await;
            match acked {
                Ok(_) => return,
                Err(error) => self.record(&error),
            }
            backoff.wait().await;
        }
    }
}

/// Writes one attempt's events of a job, in order.
struct Writer<'a> {
    queue: &'a RedisQueue,
    id: String,
    entry: String,
    attempt: u32,
    /// The index the next event takes.
    next: usize,
}

impl Writer<'_> {
    /// Logs `event`, retrying until Redis answers; false when the job is no
    /// longer this attempt's (it ended, expired, or another worker took it
    /// over).
    async fn append(&mut self, event: &JobEvent, step: Option<u32>, total: Option<u32>) -> bool {
        let json = match serde_json::to_string(event) {
            Ok(json) => json,
            Err(error) => {
                tracing::error!(job = %self.id, %error, "cannot encode an event");
                return true;
            }
        };
        let terminal = match event {
            JobEvent::Complete(_) => "completed",
            JobEvent::Error(_) => "failed",
            JobEvent::Cancelled { .. } => "cancelled",
            _ => "",
        };
        let text = |n: Option<u32>| n.map(|n| n.to_string()).unwrap_or_default();
        let mut backoff = Backoff::new();
        loop {
            let written: Result<i64, _> = scripts::APPEND
                .key(job_key(&self.id))
                .key(events_key(&self.id))
                .arg(self.attempt)
                .arg(self.next)
                .arg(&json)
                .arg(terminal)
                .arg(self.queue.config.result_ttl.as_secs().max(1))
                .arg(EVENTS_MAXLEN)
                .arg(text(step))
                .arg(text(total))
                .invoke_async(&mut self.queue.conn())
                .await;
            match written {
                Ok(index) if index >= 0 => {
                    self.next += 1;
                    return true;
                }
                Ok(code) => {
                    tracing::warn!(job = %self.id, attempt = self.attempt, code, "the job is no longer this worker's: stopping it here");
                    return false;
                }
                Err(error) => {
                    self.queue.record(&error);
                    backoff.wait().await;
                    // Keep the claim while Redis was away, before writing again.
                    self.renew().await;
                }
            }
        }
    }

    /// Resets the entry's idle time, so no other worker takes the job over;
    /// `Some(false)` when another attempt owns the job now, `None` when
    /// Redis did not answer.
    async fn renew(&self) -> Option<bool> {
        let renewed: Result<i64, _> = scripts::RENEW
            .key(&self.queue.queue_key)
            .key(job_key(&self.id))
            .arg(GROUP)
            .arg(&self.queue.worker_id)
            .arg(&self.entry)
            .arg(self.attempt)
            .invoke_async(&mut self.queue.conn())
            .await;
        match renewed {
            Ok(n) => Some(n == 1),
            Err(error) => {
                self.queue.record(&error);
                None
            }
        }
    }

    /// Logs a terminal event for a job this worker does not run.
    async fn end(&mut self, event: &JobEvent) -> Ending {
        if self.append(event, None, None).await {
            Ending::Ended
        } else {
            Ending::Left
        }
    }
}
