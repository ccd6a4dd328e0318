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

    /// A LoRA file is unreadable, in no known layout, or names a module the
    /// model does not have.
    #[error("LoRA {path}: {message}")]
    Lora {
        /// The adapter's file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },

    /// A textual-inversion embedding file is unreadable or in no known layout.
    #[error("embedding {path}: {message}")]
    Embedding {
        /// The embedding's file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A generation parameter is out of range or inconsistent with the model.
    #[error(transparent)]
    Param(#[from] ParamError),

    /// The caller asked the pipeline to stop: `on_step` returned `Break`, or
    /// the generation's [`crate::Interrupt`] was raised.
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
    Candle(candle_core::Error),
}

impl From<candle_core::Error> for Error {
    /// A layer stopped by a raised [`crate::Interrupt`] is [`Error::Cancelled`];
    /// any other tensor error is [`Error::Candle`].
    fn from(err: candle_core::Error) -> Self {
        if crate::interrupt::is_interruption(&err) {
            Error::Cancelled
        } else {
            Error::Candle(err)
        }
    }
}

/// A generation parameter, as [`crate::pipeline::GenerateParams`] and the
/// load options name it. Callers map it to their own spelling (a request
/// field, a command-line flag); the core never knows those.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Param {
    /// The prompt.
    Prompt,
    /// Denoising steps.
    Steps,
    /// Classifier-free guidance scale.
    GuidanceScale,
    /// Output width.
    Width,
    /// Output height.
    Height,
    /// The picture image-to-image and inpainting start from.
    Image,
    /// The inpainting mask.
    Mask,
    /// How much of the picture changes.
    Strength,
    /// Latents given instead of seeded noise.
    InitLatents,
    /// The dtype weights are stored in.
    WeightDtype,
    /// The dtype activations are computed in.
    ComputeDtype,
    /// How many of the text encoders' last layers are skipped.
    ClipSkip,
    /// Which autoencoder decodes the image.
    Decoder,
}

impl Param {
    /// The parameter's name in [`crate::pipeline::GenerateParams`].
    pub fn as_str(self) -> &'static str {
        match self {
            Param::Prompt => "prompt",
            Param::Steps => "steps",
            Param::GuidanceScale => "guidance_scale",
            Param::Width => "width",
            Param::Height => "height",
            Param::Image => "image",
            Param::Mask => "mask",
            Param::Strength => "strength",
            Param::InitLatents => "init_latents",
            Param::WeightDtype => "weight_dtype",
            Param::ComputeDtype => "compute_dtype",
            Param::ClipSkip => "clip_skip",
            Param::Decoder => "decoder",
        }
    }
}

impl std::fmt::Display for Param {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a parameter was rejected: which one, and a message that reads after
/// its name ("must be between 0 and 1, got 2").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {param}: {message}")]
pub struct ParamError {
    /// The parameter at fault.
    pub param: Param,
    /// Why it was rejected, without the parameter's name.
    pub message: String,
}

impl ParamError {
    /// A rejection of `param`.
    pub fn new(param: Param, message: impl Into<String>) -> Self {
        Self {
            param,
            message: message.into(),
        }
    }
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A shorthand for [`Error::Param`].
    pub fn param(param: Param, message: impl Into<String>) -> Self {
        Error::Param(ParamError::new(param, message))
    }

    /// A shorthand for [`Error::InvalidFile`].
    pub fn invalid_file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::InvalidFile {
            path: path.into(),
            message: message.into(),
        }
    }
}
