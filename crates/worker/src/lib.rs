//! The sd-worker HTTP job server.
//!
//! One process keeps one Stable Diffusion model loaded and serves image jobs
//! over rbee's job API:
//!
//! - [`validation`] turns a wire request into a [`validation::ValidJob`], defaults
//!   filled and seed chosen; only those reach the queue. Their input pictures
//!   wait there encoded and decode when the job starts ([`pictures`]).
//! - [`queue`] is the bounded FIFO in front of the engine; [`engine::runner`]
//!   is the one named thread that owns the model ([`engine::Engine`]) and runs
//!   jobs from it (each of a job's `num_images` in turn), interrupting one
//!   mid-step when it is cancelled.
//! - [`jobs`] keeps each job's event log, which any number of SSE subscribers
//!   replay and follow, and expires finished jobs.
//! - [`mod@app`] is the router; [`routes`] the handlers; [`error`] the one error
//!   type; [`extract`] the JSON extractor that names bad fields; [`guard`]
//!   refuses requests for hosts and from origins the worker does not serve.
//! - [`metrics`] counts jobs, steps and images for `GET /metrics`
//!   (Prometheus' text format).
//! - [`decoding`] sets up the tiny autoencoder and VAE tiling from the flags.
//! - [`hive`] sends the ready callback and heartbeats; [`server`] binds, serves
//!   and shuts down; [`connections`] is the accept loop with its deadlines and
//!   caps, [`body`] the guards on request bodies.
//!
//! Two other APIs sit on the same queue, validation and limits, each call
//! waiting for ordinary jobs ([`routes::blocking`]): OpenAI's Images API
//! ([`openai`], [`routes::openai`]) and AUTOMATIC1111's (`routes::a1111`).
#![deny(missing_docs)]

pub mod app;
pub mod auth;
pub mod body;
pub mod cli;
pub mod config;
pub mod connections;
pub mod convert;
pub mod decoding;
pub mod embeddings;
pub mod engine;
pub mod error;
pub mod extract;
pub mod guard;
pub mod hive;
pub mod jobs;
pub mod loras;
pub mod metrics;
pub mod openai;
pub mod outputs;
pub mod pictures;
pub mod queue;
pub mod routes;
pub mod server;
pub mod state;
pub mod validation;

pub use app::app;
pub use config::{ServeArgs, WorkerConfig};
pub use server::{shutdown_signal, Worker};
pub use state::AppState;
