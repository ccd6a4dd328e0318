//! What a generation reports while it runs and what it returns.

use std::time::Duration;

use candle_core::Tensor;

use crate::schedulers::SchedulerKind;

/// Progress after one denoising step.
#[derive(Debug, Clone, Copy)]
pub struct StepProgress<'a> {
    /// Steps done so far, from 1, summed over the images of a batch (a UNet
    /// pass of `n` images does `n`), counted in the steps asked for: when
    /// the scheduler makes more UNet passes than that (PNDM's warm-up pass),
    /// one step is reported twice, and the last pass reports `total`.
    pub step: usize,
    /// Steps asked for that run, over all the images: all of them, or at a
    /// strength below 1 `floor(steps · strength)` per image, as the
    /// request's hint says.
    pub total: usize,
    /// The latents after this step `[1, C, H/8, W/8]`, still noisy (of the
    /// first image of the pass).
    pub latents: &'a Tensor,
    /// The scheduler's prediction of the clean latents at this step, when it
    /// makes one (every scheduler but PNDM).
    pub predicted_original: Option<&'a Tensor>,
}

impl StepProgress<'_> {
    /// What a live preview should show: the clean prediction, else the latents.
    pub fn preview_latents(&self) -> &Tensor {
        self.predicted_original.unwrap_or(self.latents)
    }
}

/// Where the time of one generation went, stage by stage (each stage waits
/// for the device, so GPU figures hold).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimings {
    /// Tokenising and encoding the prompts (of a batch, the first image's only).
    pub text_encoding: Duration,
    /// Start latents and the denoising loop (of a batch, the pass's time
    /// divided among its images).
    pub denoising: Duration,
    /// VAE decoding and PNG encoding.
    pub decoding: Duration,
}

/// A finished image.
#[derive(Debug, Clone)]
pub struct GeneratedImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Interleaved 8-bit RGB, row by row.
    pub rgb: Vec<u8>,
    /// The PNG file, with the AUTOMATIC1111 `parameters` chunk.
    pub png: Vec<u8>,
    /// The seed used.
    pub seed: u64,
    /// The scheduler used.
    pub scheduler: SchedulerKind,
    /// Denoising steps that ran (PNDM's extra pass included; image-to-image
    /// runs only its share).
    pub steps_run: usize,
    /// Time spent per stage.
    pub timings: StageTimings,
    /// The intermediate tensors, when [`super::DebugOptions::trace`] asked for them.
    pub trace: Option<Trace>,
}

/// Intermediate tensors of one generation, for parity checks (`--trace`).
#[derive(Debug, Clone)]
pub struct Trace {
    /// Conditional text embeddings `[1, 77, D]`.
    pub prompt_embeds: Tensor,
    /// SDXL's pooled conditional embedding `[1, P]`.
    pub pooled_prompt_embeds: Option<Tensor>,
    /// Unconditional embeddings `[1, 77, D]`, when guidance needed them.
    pub negative_prompt_embeds: Option<Tensor>,
    /// SDXL's pooled unconditional embedding, when guidance needed it.
    pub negative_pooled_prompt_embeds: Option<Tensor>,
    /// SDXL's size conditioning `[1, 6]`.
    pub add_time_ids: Option<Tensor>,
    /// The UNet timesteps the loop ran, in order.
    pub timesteps: Vec<f64>,
    /// Latents entering the first step.
    pub latents_start: Tensor,
    /// Image-to-image and inpainting intermediates.
    pub image_input: Option<ImageTrace>,
    /// Latents after the last scheduler step, before VAE scaling.
    pub latents_final: Tensor,
    /// The decoded image `[1, 3, H, W]` in 0..1.
    pub image: Tensor,
}

/// Intermediates of image-to-image and inpainting, named as in the fixtures.
#[derive(Debug, Clone)]
pub struct ImageTrace {
    /// The prepared picture `[1, 3, H, W]` in -1..1.
    pub image_in: Tensor,
    /// The encoded picture times the VAE scaling factor, when it was encoded.
    pub image_latents: Option<Tensor>,
    /// The seeded noise `[1, C, H/8, W/8]`.
    pub noise: Tensor,
    /// The binarised mask `[1, 1, H, W]` (1 = repaint).
    pub mask_image: Option<Tensor>,
    /// The latent-resolution mask `[1, 1, H/8, W/8]`.
    pub mask: Option<Tensor>,
    /// The encoded masked picture times the VAE scaling factor.
    pub masked_image_latents: Option<Tensor>,
}
