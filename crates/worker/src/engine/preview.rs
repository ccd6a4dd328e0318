//! Live previews for the jobs that ask for them (`preview: true`).
//!
//! After a denoising step the scheduler's prediction of the clean latents (or,
//! for PNDM, the latents themselves) goes through sd-core's linear latent→RGB
//! projection, at the latent's resolution enlarged so the longer side is about
//! [`PREVIEW_SIZE`] pixels, and out as a small PNG data URL. A
//! [`PreviewBudget`] keeps previews under [`PREVIEW_SHARE`] of the denoising
//! time, and the last step gets none: the finished image follows at once.

use std::time::{Duration, Instant};

use base64::Engine as _;
use candle_core::Tensor;
use sd_contract::ProgressPreview;
use sd_core::pipeline::StepProgress;
use sd_core::preview::{latent_preview, preview_scale, LatentFormat, PreviewBudget};

/// The longer side of a preview aims at this many pixels.
pub const PREVIEW_SIZE: usize = 256;
/// The most of the denoising time previews may take.
pub const PREVIEW_SHARE: f64 = 0.01;

/// Renders latents `[1, 4, h, w]` as a preview PNG data URL.
pub fn render(latents: &Tensor, format: LatentFormat) -> sd_core::Result<ProgressPreview> {
    let (_, _, h, w) = latents.dims4()?;
    let preview = latent_preview(latents, format, preview_scale(w, h, PREVIEW_SIZE))?;
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
    format: LatentFormat,
    budget: PreviewBudget,
}

impl LivePreviews {
    /// Previews in the latent space `format`.
    pub fn new(format: LatentFormat) -> Self {
        Self {
            format,
            budget: PreviewBudget::new(PREVIEW_SHARE),
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
        let preview = render(step.preview_latents(), self.format);
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
        let preview = render(&latents, LatentFormat::Sdxl).unwrap();
        assert_eq!((preview.width, preview.height), (256, 192));
        assert_eq!(decoded_size(&preview), (256, 192));
    }

    #[test]
    fn skips_the_last_step_and_bad_latents() {
        let latents = Tensor::zeros((1, 4, 8, 8), DType::F32, &Device::Cpu).unwrap();
        let mut previews = LivePreviews::new(LatentFormat::Sd15);
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
