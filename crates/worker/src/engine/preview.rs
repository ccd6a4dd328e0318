//! Live previews for the jobs that ask for them (`preview: true`).
//!
//! After a denoising step the scheduler's prediction of the clean latents (or,
//! for PNDM, the latents themselves) becomes a picture whose longer side is
//! about [`PREVIEW_SIZE`] pixels, sent as a small PNG data URL. With a tiny
//! autoencoder loaded (`--tiny-vae`) the picture is its decode, shrunk; else
//! sd-core's linear latent→RGB projection, enlarged. A [`PreviewBudget`] keeps
//! previews under their share of the denoising time ([`PREVIEW_SHARE`], or
//! [`DECODED_PREVIEW_SHARE`] for decodes), and the last step gets none: the
//! finished image follows at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use candle_core::Tensor;
use sd_contract::ProgressPreview;
use sd_core::pipeline::StepProgress;
use sd_core::preview::{image_preview, latent_preview, preview_scale, LatentFormat, PreviewBudget};
use sd_core::vae::AutoencoderTiny;
use sd_core::Interrupt;

/// The longer side of a preview aims at this many pixels.
pub const PREVIEW_SIZE: usize = 256;
/// The most of the denoising time projected previews may take.
pub const PREVIEW_SHARE: f64 = 0.01;
/// The most of the denoising time decoded previews may take: a tiny decode
/// costs a few percent of a CPU step, so previews come every few steps.
pub const DECODED_PREVIEW_SHARE: f64 = 0.05;

/// What turns latents into a preview picture.
#[derive(Debug, Clone)]
pub enum PreviewSource {
    /// The linear projection of the latent space `format`.
    Projection(LatentFormat),
    /// The tiny autoencoder's decode.
    TinyDecoder(Arc<AutoencoderTiny>),
}

impl PreviewSource {
    /// The share of the denoising time its previews may take.
    fn share(&self) -> f64 {
        match self {
            Self::Projection(_) => PREVIEW_SHARE,
            Self::TinyDecoder(_) => DECODED_PREVIEW_SHARE,
        }
    }
}

/// Renders latents `[1, 4, h, w]` as a preview PNG data URL.
pub fn render(latents: &Tensor, source: &PreviewSource) -> sd_core::Result<ProgressPreview> {
    let (_, _, h, w) = latents.dims4()?;
    let preview = match source {
        PreviewSource::Projection(format) => {
            latent_preview(latents, *format, preview_scale(w, h, PREVIEW_SIZE))?
        }
        PreviewSource::TinyDecoder(tiny) => {
            let first = latents.narrow(0, 0, 1)?;
            image_preview(
                &tiny.decode_to_unit(&first, Interrupt::NEVER)?,
                PREVIEW_SIZE,
            )?
        }
    };
    let png = preview.to_png()?;
    Ok(ProgressPreview {
        data_url: format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(png)
        ),
        width: u32::try_from(preview.width).unwrap_or(u32::MAX),
        height: u32::try_from(preview.height).unwrap_or(u32::MAX),
    })
}

/// Which steps of one job get a preview, and the previews themselves.
#[derive(Debug)]
pub struct LivePreviews {
    source: PreviewSource,
    budget: PreviewBudget,
}

impl LivePreviews {
    /// Previews made by `source`.
    pub fn new(source: PreviewSource) -> Self {
        Self {
            budget: PreviewBudget::new(source.share()),
            source,
        }
    }

    /// The preview for a step that took `elapsed`, if the budget has room and
    /// it is not the last step. A preview that fails is skipped, never the job.
    pub fn after_step(
        &mut self,
        step: &StepProgress<'_>,
        elapsed: Duration,
    ) -> Option<ProgressPreview> {
        if !self.budget.step(elapsed) || step.step >= step.total {
            return None;
        }
        let started = Instant::now();
        let preview = render(step.preview_latents(), &self.source);
        self.budget.spend(started.elapsed());
        preview
            .inspect_err(|e| tracing::debug!(error = %e, "no preview for this step"))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;

    fn decoded_size(preview: &ProgressPreview) -> (u32, u32) {
        let png = preview
            .data_url
            .strip_prefix("data:image/png;base64,")
            .unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png)
            .unwrap();
        let reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        (reader.info().width, reader.info().height)
    }

    #[test]
    fn renders_a_png_data_url_of_about_256_pixels() {
        let latents = Tensor::zeros((1, 4, 48, 64), DType::F32, &Device::Cpu).unwrap();
        let preview = render(&latents, &PreviewSource::Projection(LatentFormat::Sdxl)).unwrap();
        assert_eq!((preview.width, preview.height), (256, 192));
        assert_eq!(decoded_size(&preview), (256, 192));
    }

    #[test]
    fn skips_the_last_step_and_bad_latents() {
        let latents = Tensor::zeros((1, 4, 8, 8), DType::F32, &Device::Cpu).unwrap();
        let mut previews = LivePreviews::new(PreviewSource::Projection(LatentFormat::Sd15));
        let step = |step, latents| StepProgress {
            step,
            total: 3,
            latents,
            predicted_original: None,
        };
        let second = Duration::from_secs(1);
        let first = previews.after_step(&step(1, &latents), second).unwrap();
        assert_eq!((first.width, first.height), (64, 64));
        assert!(previews.after_step(&step(3, &latents), second).is_none());
        let wrong = Tensor::zeros((1, 3, 8, 8), DType::F32, &Device::Cpu).unwrap();
        assert!(previews.after_step(&step(2, &wrong), second).is_none());
    }
}
