//! The AUTOMATIC1111 web UI API subset (`/sdapi/v1/...`) that Open WebUI,
//! SillyTavern and the `webuiapi` Python client use.
//!
//! Its images are ordinary jobs (see [`super::blocking`]): queued behind the
//! others, validated the same way, listed by the job API. The differences are
//! A1111's: field names, sampler names, a body that lists only what it needs
//! and ignores the rest, and errors shaped as A1111 answers them
//! ([`A1111Error`]: 422 for a bad field, as FastAPI answers a body it cannot
//! validate).
//!
//! - `generate.rs`: `txt2img` and `img2img`, and how their fields map onto a job.
//! - `status.rs`: progress, interrupt, skip, options and the lists clients read when
//!   they connect (models, samplers, schedulers, ...).

mod generate;
mod status;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use sd_contract::a1111::A1111Error;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

// Globs, so that the handlers' OpenAPI path types come along.
pub use generate::*;
pub use status::*;

use crate::error::ApiError;
use crate::extract::json_body;
use crate::state::AppState;

/// The `/sdapi/v1` routes, with the interrupt signal their calls share.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sdapi/v1/txt2img", post(txt2img))
        .route("/sdapi/v1/img2img", post(img2img))
        .route("/sdapi/v1/progress", get(progress))
        .route("/sdapi/v1/interrupt", post(interrupt))
        .route("/sdapi/v1/skip", post(skip))
        .route("/sdapi/v1/options", get(get_options).post(set_options))
        .route("/sdapi/v1/sd-models", get(sd_models))
        .route("/sdapi/v1/samplers", get(samplers))
        .route("/sdapi/v1/schedulers", get(schedulers))
        .route("/sdapi/v1/loras", get(loras))
        .route("/sdapi/v1/upscalers", get(upscalers))
        .route("/sdapi/v1/latent-upscale-modes", get(latent_upscale_modes))
        .route("/sdapi/v1/sd-vae", get(sd_vae))
        .route("/sdapi/v1/embeddings", get(embeddings))
        .route("/sdapi/v1/scripts", get(scripts))
        .layer(Extension(Interrupts::default()))
}

/// `POST /sdapi/v1/interrupt`'s and `POST /sdapi/v1/skip`'s signals: two
/// counters every call that waits for images watches; a call ends when the
/// first changes and cancels its running job when the second does.
#[derive(Debug, Clone)]
pub struct Interrupts {
    interrupt: watch::Sender<u64>,
    skip: watch::Sender<u64>,
}

impl Default for Interrupts {
    fn default() -> Self {
        Self {
            interrupt: watch::channel(0).0,
            skip: watch::channel(0).0,
        }
    }
}

impl Interrupts {
    /// Interrupts every call waiting now.
    pub fn interrupt(&self) {
        self.interrupt.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Skips the running job of every call waiting now.
    pub fn skip(&self) {
        self.skip.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Resolves at the first interrupt after this call.
    pub fn next(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        next_change(&self.interrupt)
    }

    /// Resolves at the first skip after this call.
    pub fn next_skip(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        next_change(&self.skip)
    }
}

/// Resolves at the first change of `counter` after this call.
fn next_change(
    counter: &watch::Sender<u64>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut rx = counter.subscribe();
    rx.mark_unchanged();
    async move {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// An [`ApiError`] answered in A1111's shape: a bad body or field is 422, as
/// FastAPI answers a body it cannot validate; the others keep their status
/// (and `Retry-After`). A body over the size limit is the exception: the
/// body guard refuses one that declares its length before any route runs, in
/// the worker's own format, so one sent in chunks gets the same answer.
#[derive(Debug)]
pub struct A1111ApiError(pub ApiError);

impl From<ApiError> for A1111ApiError {
    fn from(err: ApiError) -> Self {
        Self(err)
    }
}

impl IntoResponse for A1111ApiError {
    fn into_response(self) -> Response {
        let err = self.0;
        if matches!(err, ApiError::PayloadTooLarge { .. }) {
            return err.into_response();
        }
        let status = match err {
            ApiError::InvalidJson { .. } | ApiError::InvalidField { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            _ => err.status(),
        };
        let detail = err.detail();
        let message = err.to_string();
        let body = A1111Error {
            error: serde_json::to_value(detail.code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            detail: message.clone(),
            body: String::new(),
            errors: message,
        };
        // The headers (`Retry-After`, `Connection: close`) and the log line are the API's.
        let mut response = err.into_response();
        *response.status_mut() = status;
        *response.body_mut() = Body::from(serde_json::to_vec(&body).unwrap_or_default());
        response
    }
}

/// A JSON body of type `T`; an error names the field at fault, in A1111's shape.
/// Fields `T` does not declare are ignored.
#[derive(Debug)]
pub struct A1111Json<T> {
    /// The parsed body.
    pub value: T,
    /// The body as JSON, for the echo of the request in the answer.
    pub raw: serde_json::Value,
}

impl<T: DeserializeOwned> FromRequest<AppState> for A1111Json<T> {
    type Rejection = A1111ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = json_body(req, state).await?;
        let raw: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::InvalidJson {
                field: None,
                message: format!("the body is not JSON: {e}"),
            })?;
        if !raw.is_object() {
            return Err(ApiError::InvalidJson {
                field: None,
                message: "the body must be a JSON object".into(),
            }
            .into());
        }
        let value = parse_named::<T>(&raw)?;
        Ok(Self { value, raw })
    }
}

/// Parses `raw` as `T`, an error naming the field at fault. Serde loses the
/// path inside a flattened struct, so a body that fails is read again as the
/// shared fields alone to find it.
fn parse_named<T: DeserializeOwned>(raw: &serde_json::Value) -> Result<T, ApiError> {
    let error = match serde_path_to_error::deserialize::<_, T>(raw) {
        Ok(value) => return Ok(value),
        Err(error) => error,
    };
    let shared = serde_path_to_error::deserialize::<_, sd_contract::a1111::A1111Generation>(raw);
    let (path, inner) = match shared {
        Err(shared) => (shared.path().to_string(), shared.into_inner().to_string()),
        Ok(_) => (error.path().to_string(), error.into_inner().to_string()),
    };
    let field = if path == "." || path.is_empty() {
        // A missing field: serde names it in the message.
        inner
            .split('`')
            .nth(1)
            .map(str::to_string)
            .unwrap_or_else(|| "body".into())
    } else {
        path
    };
    Err(ApiError::invalid(field, inner))
}
