//! The shared job queue on Redis (`--redis-url`): many workers, one queue.
//!
//! Every worker serving the same model reads one Redis Stream of jobs
//! through one consumer group, so any worker can accept a job, any idle one
//! runs it, and any one answers for it:
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `sd-worker:queue:{model}` | stream, group `workers` | job ids in submission order; an entry is acknowledged (and deleted) only once its job has ended |
//! | `sd-worker:queue:{model}:queued` | counter | jobs not started yet, for the global `--max-queue` |
//! | `sd-worker:job:{id}` | hash | `state`, `worker_id`, `attempts`, `params`, the request to run, `step`/`total`, `cancel`, the terminal event (`end`) |
//! | `sd-worker:job:{id}:events` | stream | the job's events, entry `0-(n+1)` being event `n` (its SSE id) |
//!
//! A finished job's hash and events expire after `--result-ttl`; the events
//! stream is bounded ([`EVENTS_MAXLEN`]). The job's state changes only in
//! the Lua scripts of [`scripts`], so it ends exactly once.
//!
//! - [`RedisQueue`] (this file): submitting, status, cancelling, and the
//!   connection's health for `/ready` and `/metrics`.
//! - `follow.rs`: an SSE subscriber's replay and follow of a job's events.
//! - `consumer.rs`: the loop that feeds this worker's engine from the shared
//!   queue, one job at a time, mirrors the job's events into Redis, renews
//!   its claim, polls the cancel flag, and takes over the jobs of workers
//!   that died (`XAUTOCLAIM` after `--claim-after`).

mod config;
mod consumer;
mod follow;
pub mod scripts;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, RedisError};
use sd_contract::event::CancelReason;
use sd_contract::{JobEvent, JobParams, JobRequest, JobState, JobStatus};

pub use config::{RedisArgs, RedisConfig};
pub use consumer::spawn_consumer;

use crate::error::ApiError;
use crate::metrics::Metrics;

/// Most events a job's stream keeps (about; Redis trims whole nodes).
pub const EVENTS_MAXLEN: usize = 4096;
/// The consumer group every worker of a model reads the queue through.
pub const GROUP: &str = "workers";

/// A job's hash.
fn job_key(id: &str) -> String {
    format!("sd-worker:job:{id}")
}

/// A job's event stream.
fn events_key(id: &str) -> String {
    format!("sd-worker:job:{id}:events")
}

/// The shared queue of one model, as one worker sees it.
pub struct RedisQueue {
    config: RedisConfig,
    client: redis::Client,
    conn: ConnectionManager,
    queue_key: String,
    counter_key: String,
    worker_id: String,
    max_queue: usize,
    metrics: Arc<Metrics>,
    up: AtomicBool,
    queued: AtomicUsize,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("config", &self.config)
            .field("queue", &self.queue_key)
            .field("worker_id", &self.worker_id)
            .finish_non_exhaustive()
    }
}

impl RedisQueue {
    /// The queue of `model` on the configured server, for the worker
    /// `worker_id`; connects lazily (and reconnects by itself), so a server
    /// that is down now is not an error.
    pub fn new(
        config: RedisConfig,
        model: &str,
        worker_id: &str,
        max_queue: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Self, RedisError> {
        // Without TCP_NODELAY, Nagle's algorithm and delayed ACKs hold small
        // commands back by tens of milliseconds.
        let info = redis::IntoConnectionInfo::into_connection_info(config.url.as_str())?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info)?;
        let conn = client.get_connection_manager_lazy(
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(5)))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(1)),
        )?;
        let queue_key = format!("sd-worker:queue:{model}");
        Ok(Self {
            counter_key: format!("{queue_key}:queued"),
            queue_key,
            config,
            client,
            conn,
            worker_id: worker_id.to_string(),
            max_queue,
            metrics,
            up: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Whether the last command reached Redis.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Jobs waiting in the shared queue, as of the last health check.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// A connection of its own, for a command that blocks (`XREAD BLOCK`).
    async fn dedicated(&self, block: Duration) -> Result<MultiplexedConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(block + Duration::from_secs(5)));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// Counts and logs a failed command; the caller decides what to do.
    fn record(&self, error: &RedisError) {
        self.metrics.redis_error();
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(%error, "the shared queue's Redis stopped answering");
        } else {
            tracing::debug!(%error, "Redis command failed");
        }
    }

    /// A failed command as the answer to a request.
    fn unreachable(&self, error: RedisError) -> ApiError {
        self.record(&error);
        ApiError::QueueUnreachable(error.to_string())
    }

    fn reached(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!(url = %self.config.redacted_url(), queue = %self.queue_key, "the shared queue's Redis answers");
        }
    }

    /// Checks the connection every half second, for `/ready` and the queue
    /// depth of `/metrics`.
    pub fn spawn_health(self: &Arc<Self>) {
        let queue = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let depth: Result<Option<i64>, _> = redis::cmd("GET")
                    .arg(&queue.counter_key)
                    .query_async(&mut queue.conn())
                    .await;
                match depth {
                    Ok(n) => {
                        queue.reached();
                        let n = usize::try_from(n.unwrap_or(0).max(0)).unwrap_or(usize::MAX);
                        queue.queued.store(n, Ordering::Relaxed);
                    }
                    Err(error) => queue.record(&error),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }

    /// Queues a job whose request has its seed set; returns its position
    /// (1 = next), or `None` when `--max-queue` jobs wait already.
    pub async fn submit(
        &self,
        id: &str,
        request: &JobRequest,
        params: &JobParams,
    ) -> Result<Option<usize>, ApiError> {
        let request = serde_json::to_string(request)
            .map_err(|e| ApiError::Internal(format!("encoding the request: {e}")))?;
        let params = serde_json::to_string(params)
            .map_err(|e| ApiError::Internal(format!("encoding the parameters: {e}")))?;
        let position: i64 = scripts::SUBMIT
            .key(&self.queue_key)
            .key(&self.counter_key)
            .key(job_key(id))
            .key(events_key(id))
            .arg(self.max_queue)
            .arg(id)
            .arg(request)
            .arg(params)
            .arg(unix_millis())
            .arg(EVENTS_MAXLEN)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.unreachable(e))?;
        self.reached();
        Ok(usize::try_from(position).ok())
    }

    /// A job's status, from any worker.
    pub async fn status(&self, id: &str) -> Result<JobStatus, ApiError> {
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(job_key(id))
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.unreachable(e))?;
        if fields.is_empty() {
            return Err(ApiError::JobNotFound(id.to_string()));
        }
        let mut status = status_from_hash(id, &fields)?;
        if status.state == JobState::Queued {
            if let Some(entry) = fields.get("entry") {
                status.queue_position = self.position(entry).await?;
            }
        }
        Ok(status)
    }

    /// The position of a waiting entry (1 = next): the entries before it
    /// that no worker has taken yet.
    async fn position(&self, entry: &str) -> Result<Option<u32>, ApiError> {
        let mut conn = self.conn();
        let (before, pending): (Vec<redis::Value>, redis::streams::StreamPendingReply) =
            redis::pipe()
                .cmd("XRANGE")
                .arg(&self.queue_key)
                .arg("-")
                .arg(entry)
                .cmd("XPENDING")
                .arg(&self.queue_key)
                .arg(GROUP)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.unreachable(e))?;
        let position = before.len().saturating_sub(pending.count()).max(1);
        Ok(Some(u32::try_from(position).unwrap_or(u32::MAX)))
    }

    /// Cancels a job: a queued one ends at once (200), a running one is
    /// flagged and its worker stops it within a step (202).
    pub async fn cancel(&self, id: &str) -> Result<(StatusCode, JobStatus), ApiError> {
        let event = serde_json::to_string(&JobEvent::Cancelled {
            reason: CancelReason::Client,
        })
        .map_err(|e| ApiError::Internal(e.to_string()))?;
        let outcome: String = scripts::CANCEL
            .key(job_key(id))
            .key(events_key(id))
            .arg(self.config.result_ttl.as_secs().max(1))
            .arg(EVENTS_MAXLEN)
            .arg(event)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.unreachable(e))?;
        let code = match outcome.as_str() {
            "gone" => return Err(ApiError::JobNotFound(id.to_string())),
            "cancelled" => StatusCode::OK,
            "running" => StatusCode::ACCEPTED,
            ended => {
                return Err(ApiError::JobFinished {
                    job_id: id.to_string(),
                    state: parse_state(ended)?,
                })
            }
        };
        tracing::info!(job = id, %outcome, "cancellation requested");
        Ok((code, self.status(id).await?))
    }

    /// How many events a job has logged: the next event's id.
    pub async fn logged(&self, id: &str) -> Result<usize, ApiError> {
        let count: Option<usize> = redis::cmd("HGET")
            .arg(job_key(id))
            .arg("events")
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.unreachable(e))?;
        count.ok_or_else(|| ApiError::JobNotFound(id.to_string()))
    }
}

/// A job's status from the fields of its hash.
fn status_from_hash(id: &str, fields: &HashMap<String, String>) -> Result<JobStatus, ApiError> {
    let field = |name: &str| fields.get(name).map(String::as_str);
    let number = |name: &str| field(name).and_then(|v| v.parse::<u32>().ok());
    let state = parse_state(field("state").unwrap_or("queued"))?;
    let params: JobParams = serde_json::from_str(field("params").unwrap_or("null"))
        .map_err(|e| ApiError::Internal(format!("job {id}: stored parameters: {e}")))?;
    let end: Option<JobEvent> = field("end").and_then(|e| serde_json::from_str(e).ok());
    Ok(JobStatus {
        job_id: id.to_string(),
        state,
        queue_position: None,
        step: number("step"),
        total: number("total"),
        cancel_requested: field("cancel").is_some() && !state.is_terminal(),
        params,
        result: match &end {
            Some(JobEvent::Complete(result)) => Some(result.clone()),
            _ => None,
        },
        error: match &end {
            Some(JobEvent::Error(error)) => Some(error.clone()),
            _ => None,
        },
        worker_id: field("worker_id").map(str::to_string),
    })
}

fn parse_state(text: &str) -> Result<JobState, ApiError> {
    serde_json::from_value(serde_json::Value::String(text.to_string()))
        .map_err(|e| ApiError::Internal(format!("stored job state `{text}`: {e}")))
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
