//! Callbacks to the rbee hive (or queen) given by `--callback-url`.
//!
//! A named thread, `hive-callbacks`, sends a heartbeat at start-up, then every
//! heartbeat interval and on every phase change; once the model is loaded it
//! sends the ready callback. A hive that does not answer is retried with a
//! doubling backoff (from a second, or the heartbeat interval if shorter, up to
//! the interval for heartbeats and up to a minute for the ready callback) and is only ever logged, never fatal. On
//! shutdown a last heartbeat says `stopping`.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use sd_contract::{HeartbeatWorker, WorkerHeartbeat, WorkerReady, WorkerStatus};
use serde::Serialize;

use crate::state::{AppState, Phase};

/// Path of the ready callback under the callback URL.
pub const READY_PATH: &str = "/v1/workers/ready";
/// Path of the heartbeat under the callback URL.
pub const HEARTBEAT_PATH: &str = "/v1/worker-heartbeat";

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_READY_BACKOFF: Duration = Duration::from_secs(60);

enum Signal {
    PhaseChanged,
    Stop,
}

/// The running hive client.
pub struct HiveClient {
    signals: mpsc::Sender<Signal>,
    thread: JoinHandle<()>,
}

impl HiveClient {
    /// Starts the client if a callback URL is configured. Must be called
    /// inside the Tokio runtime (a task forwards phase changes to the thread).
    pub fn start(state: &AppState) -> std::io::Result<Option<HiveClient>> {
        let Some(base) = state.config().callback_url.clone() else {
            return Ok(None);
        };
        let (signals, rx) = mpsc::channel();
        let mut phases = state.watch_phase();
        let forward = signals.clone();
        tokio::spawn(async move {
            while phases.changed().await.is_ok() {
                if forward.send(Signal::PhaseChanged).is_err() {
                    break;
                }
            }
        });
        let callbacks = Callbacks::new(state.clone(), base);
        let thread = std::thread::Builder::new()
            .name("hive-callbacks".into())
            .spawn(move || callbacks.run(rx))?;
        Ok(Some(HiveClient { signals, thread }))
    }

    /// Sends the last heartbeat and stops the thread.
    pub async fn stop(self) {
        let _ = self.signals.send(Signal::Stop);
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// A doubling delay between `min` and `max`.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        let min = min.min(max);
        Self {
            min,
            max,
            next: min,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    fn step(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

struct Callbacks {
    state: AppState,
    base: String,
    agent: ureq::Agent,
}

impl Callbacks {
    fn new(state: AppState, base: String) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(REQUEST_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build();
        let base = base.trim_end_matches('/').to_string();
        Self { state, base, agent }
    }

    fn run(self, signals: mpsc::Receiver<Signal>) {
        let interval = self.state.config().heartbeat_interval;
        let mut heartbeat_backoff = Backoff::new(Duration::from_secs(1), interval);
        let mut ready_backoff =
            Backoff::new(Duration::from_secs(1).min(interval), MAX_READY_BACKOFF);
        let mut next_heartbeat = Instant::now();
        let mut ready_sent = false;
        let mut next_ready = Instant::now();
        loop {
            let now = Instant::now();
            if !ready_sent && self.state.phase() == Phase::Ready && next_ready <= now {
                match self.post(READY_PATH, &self.ready_body()) {
                    Ok(()) => {
                        ready_sent = true;
                        tracing::info!(hive = %self.base, "ready callback sent");
                    }
                    Err(err) => {
                        let delay = ready_backoff.step();
                        tracing::warn!(hive = %self.base, error = %err, retry_in = ?delay, "ready callback failed");
                        next_ready = now + delay;
                    }
                }
            }
            if next_heartbeat <= now {
                next_heartbeat = match self.post(HEARTBEAT_PATH, &self.heartbeat(None)) {
                    Ok(()) => {
                        heartbeat_backoff.reset();
                        now + interval
                    }
                    Err(err) => {
                        let delay = heartbeat_backoff.step();
                        tracing::warn!(hive = %self.base, error = %err, retry_in = ?delay, "heartbeat failed");
                        now + delay
                    }
                };
            }
            let mut wake = next_heartbeat;
            if !ready_sent && self.state.phase() == Phase::Ready {
                wake = wake.min(next_ready);
            }
            match signals.recv_timeout(wake.saturating_duration_since(Instant::now())) {
                Ok(Signal::PhaseChanged) => next_heartbeat = Instant::now(),
                Err(RecvTimeoutError::Timeout) => {}
                Ok(Signal::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if let Err(err) = self.post(
            HEARTBEAT_PATH,
            &self.heartbeat(Some(WorkerStatus::Stopping)),
        ) {
            tracing::warn!(hive = %self.base, error = %err, "last heartbeat failed");
        }
    }

    fn ready_body(&self) -> WorkerReady {
        let c = self.state.config();
        WorkerReady {
            worker_id: c.worker_id.clone(),
            url: self.state.public_url(),
            model_ref: c.model.clone(),
            backend: c.backend.as_str().to_string(),
            device: c.device,
        }
    }

    fn heartbeat(&self, status: Option<WorkerStatus>) -> WorkerHeartbeat {
        let c = self.state.config();
        WorkerHeartbeat {
            worker: HeartbeatWorker {
                id: c.worker_id.clone(),
                model_id: c.model.clone(),
                device: c.device,
                port: self.state.addr().port(),
                status: status.unwrap_or_else(|| self.state.worker_status()),
                implementation: format!("sd-worker-{}", c.backend.as_str()),
                version: env!("CARGO_PKG_VERSION").to_string(),
            },
            timestamp: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        }
    }

    fn post<T: Serialize>(&self, path: &str, body: &T) -> Result<(), String> {
        let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        self.agent
            .post(&format!("{}{path}", self.base))
            .set("content-type", "application/json")
            .send_bytes(&bytes)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let delays: Vec<u64> = (0..5).map(|_| b.step().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
        b.reset();
        assert_eq!(b.step(), Duration::from_secs(1));
        let mut short = Backoff::new(Duration::from_secs(1), Duration::from_millis(100));
        assert_eq!(short.step(), Duration::from_millis(100));
    }
}
