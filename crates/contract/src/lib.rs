//! Wire types of the sd-worker API.
//!
//! Everything a client sends or receives is declared here, with serde and OpenAPI
//! schemas, so the worker, its tests and the generated TypeScript SDK share one
//! source of truth. This crate holds no tensors and no HTTP code.
#![deny(missing_docs)]

pub mod scheduler;

pub use scheduler::SchedulerKind;
