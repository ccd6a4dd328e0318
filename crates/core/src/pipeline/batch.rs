//! Several images of one generation: how many share a UNet pass, chosen by a
//! memory budget, and the progress count over all of them.

use super::params::GenerateParams;
use super::StableDiffusion;

/// How a generation of several images is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPlan {
    /// Images in all.
    pub images: usize,
    /// Most images denoised together in one UNet batch (each guided image
    /// adds two rows to it); the rest follow in further passes.
    pub per_pass: usize,
}

impl BatchPlan {
    /// One image.
    pub const ONE: BatchPlan = BatchPlan {
        images: 1,
        per_pass: 1,
    };
}

/// The memory a generation may spend on the activations of batched UNet
/// passes, beyond what one image needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchBudget {
    /// Bytes; 0 runs every image on its own.
    pub bytes: u64,
}

impl BatchBudget {
    /// The default: 2 GiB, which puts five guided SD 1.5 images at 512² in
    /// a pass (all eight at 256²) and two SDXL images at 1024².
    pub const DEFAULT: BatchBudget = BatchBudget { bytes: 2 << 30 };

    /// A budget of `mib` mebibytes.
    pub fn mib(mib: u64) -> Self {
        Self { bytes: mib << 20 }
    }
}

impl Default for BatchBudget {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Bytes of UNet activations one latent cell of one batch row is taken to
/// need at the peak of a pass, beyond the weights: the full-size SD 1.5 UNet
/// at 512², batch 2, peaked 286 MiB above its loaded size on the CPU build
/// (README, "Weight precision"), about 36 KiB per row and cell; this allows
/// nearly twice that. Models with wider first blocks scale it by their width.
const ACTIVATION_BYTES_PER_CELL: u64 = 64 * 1024;

impl StableDiffusion {
    /// How `images` images of `params` are batched within `budget`: as many
    /// per UNet pass as the budget holds beyond the first image's own
    /// activations, at least one.
    pub fn batch_plan(
        &self,
        params: &GenerateParams,
        images: usize,
        budget: BatchBudget,
    ) -> BatchPlan {
        let factor = self.vae_scale_factor() as u64;
        let cells = (params.width as u64 / factor) * (params.height as u64 / factor);
        let rows = if params.guided() { 2 } else { 1 };
        let width = self
            .unet
            .as_ref()
            .map_or(320, |unet| unet.config().block_out_channels[0]) as u64;
        let per_image = cells * rows * ACTIVATION_BYTES_PER_CELL * width / 320;
        let extra = budget.bytes / per_image.max(1);
        BatchPlan {
            images,
            per_pass: (1 + extra as usize).min(images.max(1)),
        }
    }
}

/// Steps done over all the images of a generation.
#[derive(Debug, Clone, Copy)]
pub(super) struct BatchProgress {
    /// Asked steps done by the finished passes, summed over the images.
    pub(super) done: usize,
    /// Asked steps of all the images.
    pub(super) total: usize,
}

impl BatchProgress {
    /// No step done of `images` images of `per_image` steps each.
    pub(super) fn new(images: usize, per_image: usize) -> Self {
        Self {
            done: 0,
            total: images * per_image,
        }
    }
}
