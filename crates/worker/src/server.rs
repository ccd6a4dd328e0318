//! Binding, serving and shutting down.
//!
//! The port is bound first, so `/health` answers while the model loads on the
//! engine thread. On the shutdown signal the worker stops taking jobs, cancels
//! the waiting ones and the running one (or lets it finish with
//! `--drain-on-shutdown`), so every open stream receives its terminal event
//! and ends; then the server closes its connections and the hive hears a last
//! `stopping` heartbeat. Jobs get `--shutdown-timeout` to end; then those left
//! are cancelled and the worker exits even if the engine is still computing a
//! step. [`crate::connections`] serves the connections.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::app::app;
use crate::config::WorkerConfig;
use crate::connections;
use crate::engine::runner::spawn_engine;
use crate::engine::EngineLoader;
use crate::hive::HiveClient;
use crate::jobs::redis::spawn_consumer;
use crate::jobs::JobStore;
use crate::outputs::OutputDir;
use crate::state::AppState;

/// A worker whose port is bound.
pub struct Worker {
    state: AppState,
    listener: TcpListener,
}

impl Worker {
    /// Binds the configured address (port 0 picks a free port).
    pub async fn bind(config: WorkerConfig) -> std::io::Result<Worker> {
        let listener = TcpListener::bind((config.host, config.port)).await?;
        let addr = listener.local_addr()?;
        tracing::info!("listening on http://{addr}");
        if !addr.ip().is_loopback() && config.api_key.is_none() {
            tracing::warn!(
                %addr,
                "listening beyond this machine without --api-key: anyone who can reach the port \
                 can submit jobs and read their results"
            );
        }
        if let Some(outputs) = config.output_dir.as_deref().map(OutputDir::new) {
            outputs.prepare()?;
            tracing::info!(folder = %outputs.root().display(), "saving finished images");
        }
        if let Some(redis) = &config.redis {
            tracing::info!(url = %redis.redacted_url(), "jobs go through the shared queue in Redis");
        }
        let state = AppState::try_new(config, addr).map_err(std::io::Error::other)?;
        Ok(Worker { state, listener })
    }

    /// The shared state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.state.addr()
    }

    /// Loads the model in the background and serves until `shutdown` resolves.
    pub async fn run(
        self,
        loader: EngineLoader,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Worker { state, listener } = self;
        spawn_engine(state.clone(), loader)?;
        spawn_reaper(state.clone());
        if let JobStore::Redis(queue) = state.store() {
            queue.spawn_health();
            spawn_consumer(state.clone(), Arc::clone(queue));
        }
        let hive = HiveClient::start(&state)?;
        let jobs_ended = {
            let state = state.clone();
            async move {
                shutdown.await;
                state.begin_shutdown();
                end_jobs(&state).await;
            }
        };
        let limits = state.config().connections;
        connections::serve(listener, app(state.clone()), limits, jobs_ended).await;
        if let Some(hive) = hive {
            hive.stop().await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Waits for the jobs to end, up to `--shutdown-timeout`; then cancels those
/// that have not, without waiting for the engine to notice.
async fn end_jobs(state: &AppState) {
    let deadline = state.config().shutdown_timeout;
    let idle = tokio::time::timeout(deadline, state.wait_idle()).await;
    let cancelled = state.cancel_unfinished();
    if idle.is_err() {
        tracing::warn!(
            cancelled,
            "jobs still running {deadline:?} after the shutdown signal were cancelled; \
             exiting without waiting for the engine"
        );
    }
}

/// Forgets finished jobs once their retention period is over (the count and
/// byte caps are applied as jobs arrive and end).
fn spawn_reaper(state: AppState) {
    let period = (state.config().job_retention / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(30));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let expired = state.expire_jobs();
            if expired > 0 {
                tracing::debug!(expired, "expired finished jobs");
            }
        }
    });
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received"),
        _ = terminate => tracing::info!("SIGTERM received"),
    }
}
