//! The one error body every failing route answers with:
//! `{"error": {"code": ..., "field": ..., "message": ...}}`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What kind of failure an error reports; stable, for programs to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not JSON, or not an object of the expected shape.
    InvalidJson,
    /// A field has a wrong type or a value out of range (`field` names it).
    InvalidRequest,
    /// The `operation` tag names no known operation.
    UnknownOperation,
    /// The operation is known but this worker cannot run it yet.
    NotImplemented,
    /// The body is larger than the worker accepts.
    PayloadTooLarge,
    /// The body is sent with a content type other than JSON.
    UnsupportedMediaType,
    /// The request body did not arrive within the body timeout.
    RequestTimeout,
    /// The route needs `Authorization: Bearer <api key>`.
    Unauthorized,
    /// The request names a host this worker does not serve (`Host`), or comes
    /// from a web page of an origin not allowed to call it (`Origin`).
    Forbidden,
    /// No such route or job.
    NotFound,
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// The job has already ended.
    JobFinished,
    /// A stream was asked to resume after an event the job has not logged
    /// (`Last-Event-ID` past its last event so far).
    EventNotLogged,
    /// The queue is full; retry after the `Retry-After` header's seconds.
    QueueFull,
    /// As many event streams are open as the worker serves; retry after the
    /// `Retry-After` header's seconds.
    TooManyStreams,
    /// The model is not loaded (yet, or it failed to load).
    NotReady,
    /// The worker is shutting down and takes no new jobs.
    ShuttingDown,
    /// The shared queue (`--redis-url`) cannot be reached; retry after the
    /// `Retry-After` header's seconds.
    QueueUnreachable,
    /// Generating the image failed.
    GenerationFailed,
    /// The worker hit a bug.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::UnknownOperation => "unknown_operation",
            ErrorCode::NotImplemented => "not_implemented",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::JobFinished => "job_finished",
            ErrorCode::EventNotLogged => "event_not_logged",
            ErrorCode::QueueFull => "queue_full",
            ErrorCode::TooManyStreams => "too_many_streams",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::QueueUnreachable => "queue_unreachable",
            ErrorCode::GenerationFailed => "generation_failed",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One error: what kind, which request field (when one is at fault), and a
/// message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// What kind of failure.
    pub code: ErrorCode,
    /// The request field at fault, as the client spelled it (`steps`, `width`, ...).
    pub field: Option<String>,
    /// What went wrong, naming the limit and the value given where there is one.
    pub message: String,
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

impl ErrorDetail {
    /// An error with no field at fault.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            field: None,
            message: message.into(),
        }
    }

    /// An error about one request field.
    pub fn field(code: ErrorCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code,
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialise_as_their_names() {
        for code in [
            ErrorCode::InvalidJson,
            ErrorCode::QueueFull,
            ErrorCode::TooManyStreams,
            ErrorCode::RequestTimeout,
            ErrorCode::Forbidden,
            ErrorCode::EventNotLogged,
            ErrorCode::GenerationFailed,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
        let body = ErrorBody {
            error: ErrorDetail::field(ErrorCode::InvalidRequest, "steps", "too many"),
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"error":{"code":"invalid_request","field":"steps","message":"too many"}}"#
        );
    }
}
