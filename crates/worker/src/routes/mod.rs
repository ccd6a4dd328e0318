//! The HTTP routes, one module per concern. Each handler extracts, validates,
//! calls the state and answers; the OpenAPI annotation sits on the handler.
//! `jobs` and `stream` are rbee's job API; `openai` and `a1111` the other
//! APIs, whose calls wait for their jobs through `blocking`.

pub mod a1111;
pub mod blocking;
pub mod embeddings;
pub mod health;
pub mod info;
pub mod jobs;
pub mod loras;
pub mod metrics;
pub mod openai;
pub mod openapi;
pub mod stream;
pub mod ui;

use axum::extract::Request;

use crate::error::ApiError;

/// The answer for a path no route matches.
pub async fn not_found(req: Request) -> ApiError {
    ApiError::RouteNotFound {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
    }
}

/// The answer for a method a route does not take.
pub async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::MethodNotAllowed(req.method().to_string())
}
