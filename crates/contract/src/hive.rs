//! The callbacks a worker sends to the rbee hive (or queen) that spawned it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST {callback_url}/v1/workers/ready`, sent once the model is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkerReady {
    /// The worker's id.
    pub worker_id: String,
    /// Where the worker serves, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// The model it serves.
    pub model_ref: String,
    /// `cpu`, `cuda` or `metal`.
    pub backend: String,
    /// The device index.
    pub device: u32,
}

/// What a worker is doing, as heartbeats report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkerStatus {
    /// Loading its model.
    Starting,
    /// Idle and accepting jobs.
    Ready,
    /// Running a job.
    Busy,
    /// Shutting down.
    Stopping,
}

/// The worker part of a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatWorker {
    /// The worker's id.
    pub id: String,
    /// The model it serves.
    pub model_id: String,
    /// The device index.
    pub device: u32,
    /// The port it serves on.
    pub port: u16,
    /// What it is doing.
    pub status: WorkerStatus,
    /// The implementation, e.g. `sd-worker-cpu`.
    pub implementation: String,
    /// The implementation's version.
    pub version: String,
}

/// `POST {callback_url}/v1/worker-heartbeat`, sent every heartbeat interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkerHeartbeat {
    /// The worker.
    pub worker: HeartbeatWorker,
    /// When it was sent, RFC 3339 in UTC.
    pub timestamp: String,
}
