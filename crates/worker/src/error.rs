//! The one error type of the HTTP API and its response.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sd_contract::{ErrorBody, ErrorCode, ErrorDetail, JobState};

/// Everything a route can fail with. Each variant knows its status code and
/// turns into the `{"error": {"code", "field", "message"}}` body.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON or not shaped like the request.
    #[error("{message}")]
    InvalidJson {
        /// The field at fault, when the parser could tell.
        field: Option<String>,
        /// What the parser said.
        message: String,
    },
    /// A field has a wrong value.
    #[error("invalid {field}: {message}")]
    InvalidField {
        /// The field at fault.
        field: String,
        /// Why, with the limit and the value given.
        message: String,
    },
    /// The `operation` tag is missing or unknown.
    #[error("{message}")]
    UnknownOperation {
        /// What is wrong with the tag.
        message: String,
    },
    /// The body is over the size limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The body did not arrive in time.
    #[error("the request body did not arrive within {secs} s")]
    BodyTimeout {
        /// The body timeout in seconds.
        secs: f64,
    },
    /// The body's content type is not JSON.
    #[error("expected a JSON body (content-type application/json), got {0}")]
    UnsupportedMediaType(String),
    /// The body of a file upload route is not `multipart/form-data`.
    #[error("expected a multipart/form-data body, got {0}")]
    NotMultipart(String),
    /// The API key is missing or wrong.
    #[error("this route needs the header `Authorization: Bearer <api key>`")]
    Unauthorized,
    /// `Host` names a host this worker does not serve (see [`crate::guard`]).
    #[error("host `{0}` is not served here (see --allowed-hosts)")]
    ForbiddenHost(String),
    /// `Origin` is neither this worker's nor an allowed one (see [`crate::guard`]).
    #[error("requests from pages of origin `{0}` are not allowed (see --allowed-origins)")]
    ForbiddenOrigin(String),
    /// No such job.
    #[error("no job {0} (finished jobs are kept only for the retention period)")]
    JobNotFound(String),
    /// No such route.
    #[error("no route {method} {path}")]
    RouteNotFound {
        /// The request's method.
        method: String,
        /// The request's path.
        path: String,
    },
    /// The route does not take this method.
    #[error("method {0} is not allowed on this route")]
    MethodNotAllowed(String),
    /// The job has already ended.
    #[error("job {job_id} has already ended ({state:?})")]
    JobFinished {
        /// The job.
        job_id: String,
        /// How it ended.
        state: JobState,
    },
    /// A stream asked to resume after an event the job has not logged.
    #[error("Last-Event-ID {0}")]
    EventNotLogged(String),
    /// The queue is full.
    #[error("the queue is full ({capacity} jobs waiting); retry in {retry_after_secs} s")]
    QueueFull {
        /// How many jobs may wait.
        capacity: usize,
        /// Seconds to wait before retrying.
        retry_after_secs: u64,
    },
    /// Every event stream the worker serves is taken.
    #[error("{limit} event streams are open, the most this worker serves; retry in {retry_after_secs} s")]
    TooManyStreams {
        /// The most streams open at once.
        limit: usize,
        /// Seconds to wait before retrying.
        retry_after_secs: u64,
    },
    /// The model is not loaded.
    #[error("the model is not ready: {reason}")]
    NotReady {
        /// Loading, or why loading failed.
        reason: String,
        /// Whether it may become ready later (still loading).
        retry: bool,
    },
    /// The worker is shutting down.
    #[error("the worker is shutting down and accepts no new jobs")]
    ShuttingDown,
    /// The shared queue's Redis did not answer; nothing was done.
    #[error("the shared job queue (Redis) cannot be reached: {0}")]
    QueueUnreachable(String),
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A field-level validation error.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson { .. }
            | ApiError::InvalidField { .. }
            | ApiError::UnknownOperation { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(_) | ApiError::NotMultipart(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::ForbiddenHost(_) | ApiError::ForbiddenOrigin(_) => StatusCode::FORBIDDEN,
            ApiError::JobNotFound(_) | ApiError::RouteNotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::JobFinished { .. } | ApiError::EventNotLogged(_) => StatusCode::CONFLICT,
            ApiError::QueueFull { .. }
            | ApiError::TooManyStreams { .. }
            | ApiError::NotReady { .. }
            | ApiError::ShuttingDown
            | ApiError::QueueUnreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error body's content.
    pub fn detail(&self) -> ErrorDetail {
        let message = self.to_string();
        match self {
            ApiError::InvalidJson { field, .. } => ErrorDetail {
                code: ErrorCode::InvalidJson,
                field: field.clone(),
                message,
            },
            ApiError::InvalidField { field, message } => {
                ErrorDetail::field(ErrorCode::InvalidRequest, field, message.clone())
            }
            ApiError::UnknownOperation { .. } => {
                ErrorDetail::field(ErrorCode::UnknownOperation, "operation", message)
            }
            ApiError::PayloadTooLarge { .. } => {
                ErrorDetail::new(ErrorCode::PayloadTooLarge, message)
            }
            ApiError::BodyTimeout { .. } => ErrorDetail::new(ErrorCode::RequestTimeout, message),
            ApiError::UnsupportedMediaType(_) | ApiError::NotMultipart(_) => {
                ErrorDetail::new(ErrorCode::UnsupportedMediaType, message)
            }
            ApiError::Unauthorized => ErrorDetail::new(ErrorCode::Unauthorized, message),
            ApiError::ForbiddenHost(_) | ApiError::ForbiddenOrigin(_) => {
                ErrorDetail::new(ErrorCode::Forbidden, message)
            }
            ApiError::JobNotFound(_) | ApiError::RouteNotFound { .. } => {
                ErrorDetail::new(ErrorCode::NotFound, message)
            }
            ApiError::MethodNotAllowed(_) => ErrorDetail::new(ErrorCode::MethodNotAllowed, message),
            ApiError::JobFinished { .. } => ErrorDetail::new(ErrorCode::JobFinished, message),
            ApiError::EventNotLogged(_) => {
                ErrorDetail::field(ErrorCode::EventNotLogged, "Last-Event-ID", message)
            }
            ApiError::QueueFull { .. } => ErrorDetail::new(ErrorCode::QueueFull, message),
            ApiError::TooManyStreams { .. } => ErrorDetail::new(ErrorCode::TooManyStreams, message),
            ApiError::NotReady { .. } => ErrorDetail::new(ErrorCode::NotReady, message),
            ApiError::ShuttingDown => ErrorDetail::new(ErrorCode::ShuttingDown, message),
            ApiError::QueueUnreachable(_) => ErrorDetail::new(ErrorCode::QueueUnreachable, message),
            ApiError::Internal(_) => ErrorDetail::new(ErrorCode::Internal, message),
        }
    }

    /// Logs the error at the level it deserves: internal failures at ERROR; a
    /// full queue (backpressure doing its job) at INFO; a model that failed to
    /// load (already logged at ERROR when it failed) at WARN; the rest, which
    /// are the client's doing or a passing state, at DEBUG.
    fn log(&self, status: StatusCode) {
        match self {
            ApiError::Internal(_) => tracing::error!(%self, "request failed"),
            ApiError::QueueFull { .. } => tracing::info!(%self, %status, "request refused"),
            ApiError::QueueUnreachable(_) => tracing::warn!(%self, %status, "request refused"),
            ApiError::NotReady { retry: false, .. } => {
                tracing::warn!(%self, %status, "request refused")
            }
            _ => tracing::debug!(%self, %status, "request rejected"),
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::QueueFull {
                retry_after_secs, ..
            }
            | ApiError::TooManyStreams {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            ApiError::NotReady { retry: true, .. } => Some(5),
            ApiError::QueueUnreachable(_) => Some(1),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        self.log(status);
        let mut response = (
            status,
            Json(ErrorBody {
                error: self.detail(),
            }),
        )
            .into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if matches!(
            self,
            ApiError::BodyTimeout { .. } | ApiError::PayloadTooLarge { .. }
        ) {
            // The rest of the body is not read: the connection cannot carry another request.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
