//! The one error type of the model core.

use std::path::PathBuf;

/// Everything that can go wrong while loading a model or generating an image.
///
/// Each variant names what failed (a file, a tensor, a request field) so the
/// worker can turn it into a useful message without guessing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file the model folder must contain is not there.
    #[error("missing model file {0}")]
    MissingFile(PathBuf),

    /// A file exists but could not be read.
    #[error("cannot read {path}: {cause}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying I/O error (part of the message, not a separate source).
        cause: std::io::Error,
    },

    /// A JSON or text file could not be parsed, or holds values we cannot use.
    #[error("invalid {path}: {message}")]
    InvalidFile {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// Loading the weights of one component failed (missing tensor, wrong shape).
    #[error("loading weights from {path}: {cause}")]
    Weights {
        /// The safetensors file (or the first of several) being read.
        path: PathBuf,
        /// The tensor-level error, which names the tensor and its shapes
        /// (part of the message, not a separate source).
        cause: candle_core::Error,
    },

    /// A request parameter is out of range or inconsistent.
    #[error("invalid {field}: {message}")]
    InvalidRequest {
        /// The request field at fault, as the user spelled it (`width`, `steps`, ...).
        field: &'static str,
        /// Why it was rejected.
        message: String,
    },

    /// The caller asked the pipeline to stop.
    #[error("generation cancelled")]
    Cancelled,

    /// Fetching a model from the Hugging Face Hub failed.
    #[error("model download: {0}")]
    Hub(String),

    /// Encoding the output image failed.
    #[error("image encoding: {0}")]
    Image(String),

    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A shorthand for [`Error::InvalidRequest`].
    pub fn invalid_request(field: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidRequest {
            field,
            message: message.into(),
        }
    }

    /// A shorthand for [`Error::InvalidFile`].
    pub fn invalid_file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::InvalidFile {
            path: path.into(),
            message: message.into(),
        }
    }
}
