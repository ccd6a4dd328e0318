//! The generation engine: the trait the server drives, and the one thread
//! that owns it.
//!
//! The server never touches a model. It hands validated jobs, their pictures
//! decoded, to an [`Engine`] on the engine thread ([`runner`]), which reports each denoising step through
//! a callback, carrying a live preview on some steps of jobs that asked for
//! one ([`preview`]). A job of several images is several calls, one per
//! seed, made by the runner. The job's cancel flag reaches the engine as an
//! [`Interrupt`], which stops it inside long phases too (text encoding, one
//! UNet pass, the VAE), not only between steps. [`stable_diffusion::SdEngine`] is
//! the real engine; [`fake::FakeEngine`] implements the trait without a model,
//! for tests of everything around generation.

use std::ops::ControlFlow;

use sd_contract::ProgressPreview;
use sd_core::model::ModelProfile;
use sd_core::Interrupt;

use crate::pictures::PictureError;
use crate::validation::RunnableJob;

pub mod fake;
pub mod preview;
pub mod runner;
pub mod stable_diffusion;

/// One finished denoising step, as the engine reports it to the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUpdate {
    /// Steps done so far, 1-based, over all the job's images.
    pub step: usize,
    /// Steps in all, over all the job's images.
    pub total: usize,
    /// A live preview, on some steps of jobs that asked for one.
    pub preview: Option<ProgressPreview>,
}

/// A generated image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOutput {
    /// The PNG file.
    pub png: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The seed used.
    pub seed: u64,
}

/// Why loading a model or generating an image failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The model rejected a parameter the validation could not know about.
    #[error("invalid {field}: {message}")]
    InvalidRequest {
        /// The request field at fault.
        field: String,
        /// Why.
        message: String,
    },
    /// The interrupt was raised, or the progress callback asked to stop.
    #[error("generation cancelled")]
    Cancelled,
    /// Anything else; the message says what and where.
    #[error("{0}")]
    Failed(String),
}

impl From<PictureError> for EngineError {
    fn from(e: PictureError) -> Self {
        EngineError::InvalidRequest {
            field: e.field.to_string(),
            message: e.message,
        }
    }
}

/// A loaded model that turns jobs into images. It lives on the engine thread
/// only, so it need not be `Send`.
pub trait Engine {
    /// What the model is and accepts.
    fn profile(&self) -> ModelProfile;

    /// Generates the job's images, image `i` with [`RunnableJob::seed_of`]`(i)`,
    /// calling `on_step` after every denoising step (counted over all the
    /// images, never going back) and `on_image` with each image as it is
    /// finished, in order. Once `interrupt` is raised, or `on_step` returns
    /// `Break`, stops as soon as it can and returns [`EngineError::Cancelled`].
    fn generate(
        &mut self,
        job: &RunnableJob,
        interrupt: Interrupt<'_>,
        on_step: &mut dyn FnMut(StepUpdate) -> ControlFlow<()>,
        on_image: &mut dyn FnMut(EngineOutput),
    ) -> Result<(), EngineError>;
}

/// Loads the model; runs on the engine thread, after the port is bound.
pub type EngineLoader = Box<dyn FnOnce() -> Result<Box<dyn Engine>, EngineError> + Send>;
