//! The command line of `bench`, and the figures a command line selects.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use sd_core::pipeline::BatchPlan;

use crate::config::PrecisionArgs;
use crate::decoding::DecodingArgs;

/// A model architecture the benchmark builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchModel {
    /// Stable Diffusion 1.5: UNet 860M, CLIP ViT-L/14 text encoder.
    Sd15,
    /// SD-Turbo: SD 2.1 shapes (linear projections, OpenCLIP-H text encoder), one step.
    SdTurbo,
    /// SDXL base: UNet 2.6B, CLIP-L + OpenCLIP-bigG text encoders.
    Sdxl,
}

/// What one figure times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchComponent {
    /// One UNet forward pass (one denoising step) at the given batch.
    Unet,
    /// VAE decoding of one latent to an image.
    VaeDecode,
    /// VAE encoding of one image to its latent distribution.
    VaeEncode,
    /// Decoding of one latent with the tiny autoencoder (`--tiny-vae`, else
    /// random weights in TAESD's shape).
    TinyDecode,
    /// Encoding one prompt (both encoders for SDXL).
    Text,
    /// A whole image from the production pipeline: prompt, `--steps`
    /// denoising steps, VAE decoding and the PNG.
    Image,
}

/// Arguments of `sd-worker-cpu bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Model architectures to build.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sd15")]
    pub models: Vec<BenchModel>,
    /// Components to time.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "unet,vae-decode,vae-encode,text,image"
    )]
    pub components: Vec<BenchComponent>,
    /// Image sizes in pixels (square); latents are 1/8 of this.
    #[arg(long, value_delimiter = ',', default_value = "256,512")]
    pub sizes: Vec<usize>,
    /// UNet batch sizes (2 is one guided step).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub batches: Vec<usize>,
    /// Timed repetitions per figure; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Untimed runs before the timed ones.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Denoising steps of the `image` figure [default: 1 for sd-turbo, 4 otherwise].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Guidance scale of the `image` figure; above 1 runs the UNet at batch 2
    /// [default: 0 for sd-turbo, 7.5 otherwise].
    #[arg(long)]
    pub guidance_scale: Option<f64>,
    /// Images the `image` figure makes, as one job of that many (`num_images`):
    /// seeds `--seed`, `--seed + 1`, …, the prompt encoded once.
    #[arg(long, default_value_t = 1)]
    pub images: usize,
    /// Most of the `image` figure's images denoised together in one UNet
    /// pass (1: one after the other) [default: all of them].
    #[arg(long)]
    pub images_per_pass: Option<usize>,
    /// Seed of the random weights and inputs, and of the `image` figure's noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// `--dtype` and `--compute-dtype`, as the worker takes them (random
    /// weights are drawn in f32 and rounded).
    #[command(flatten)]
    pub precision: PrecisionArgs,
    /// Load the weights from this diffusers folder instead of drawing them
    /// (one model only; the folder's configs, tokenizers and scheduler are used).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Write the random weights, configs and tokenizers of the (single) model
    /// as a diffusers folder here, then exit.
    #[arg(long)]
    pub save_weights: Option<PathBuf>,
    /// Write each figure's inputs and outputs to `<dir>/<model>-<component>-<size>-b<batch>.safetensors`.
    #[arg(long)]
    pub dump: Option<PathBuf>,
    /// Compute threads (sets RAYON_NUM_THREADS) [default: the physical cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Run every figure in this process instead of one child process per figure.
    #[arg(long)]
    pub in_process: bool,
    /// Print one JSON object per figure instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Leave glibc's allocator at its defaults instead of `sd_core::layers::tune_allocator`.
    #[arg(long)]
    pub default_allocator: bool,
    /// Device index (the GPU for cuda and metal builds).
    #[arg(long, default_value_t = 0)]
    pub device: usize,
    /// The tiny autoencoder (`tiny-decode`, and `image` with `--vae-decoder
    /// tiny`) and VAE tiling (`vae-decode`, `vae-encode`, `image`), as the worker takes them.
    #[command(flatten)]
    pub decoding: DecodingArgs,
}

/// One figure to measure: a component of a model at a size and batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FigureSpec {
    /// The architecture.
    pub model: BenchModel,
    /// What is timed.
    pub component: BenchComponent,
    /// Image side in pixels (0 for text encoding).
    pub size: usize,
    /// UNet batch (1 for the other components).
    pub batch: usize,
}

impl BenchArgs {
    /// Rejects values no figure can run with, naming the flag.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.threads == Some(0) {
            bail!("--threads must be at least 1");
        }
        if self.reps == 0 {
            bail!("--reps must be at least 1");
        }
        if let Some(size) = self.sizes.iter().find(|s| **s == 0 || **s % 8 != 0) {
            bail!("--sizes must be positive multiples of 8, got {size}");
        }
        if self.batches.contains(&0) {
            bail!("--batches must be at least 1");
        }
        if self.images == 0 || self.images_per_pass == Some(0) {
            bail!("--images and --images-per-pass must be at least 1");
        }
        if self.steps == Some(0) {
            bail!("--steps must be at least 1");
        }
        if self.weights.is_some() || self.save_weights.is_some() {
            self.single_model()?;
        }
        Ok(())
    }

    /// The one model `--weights` and `--save-weights` apply to.
    pub fn single_model(&self) -> anyhow::Result<BenchModel> {
        match self.models.as_slice() {
            [model] => Ok(*model),
            _ => bail!("--weights and --save-weights take exactly one model"),
        }
    }

    /// Steps and guidance scale of `model`'s `image` figure: the flags, else
    /// one unguided step for SD-Turbo and four steps at 7.5 for the others.
    pub fn image_settings(&self, model: BenchModel) -> (usize, f64) {
        let turbo = model == BenchModel::SdTurbo;
        let steps = self.steps.unwrap_or(if turbo { 1 } else { 4 });
        let guidance = self.guidance_scale.unwrap_or(if turbo { 0.0 } else { 7.5 });
        (steps, guidance)
    }

    /// How the `image` figure's images share UNet passes.
    pub fn image_plan(&self) -> BatchPlan {
        BatchPlan {
            images: self.images,
            per_pass: self.images_per_pass.unwrap_or(self.images).min(self.images),
        }
    }

    /// Every figure the arguments select, in order: models, then components,
    /// then sizes (none for text), then batches (the UNet's only).
    pub fn figures(&self) -> Vec<FigureSpec> {
        let mut figures = Vec::new();
        for &model in &self.models {
            for &component in &self.components {
                let sizes: &[usize] = match component {
                    BenchComponent::Text => &[0],
                    _ => &self.sizes,
                };
                let batches: &[usize] = match component {
                    BenchComponent::Unet => &self.batches,
                    _ => &[1],
                };
                for &size in sizes {
                    for &batch in batches {
                        figures.push(FigureSpec {
                            model,
                            component,
                            size,
                            batch,
                        });
                    }
                }
            }
        }
        figures
    }
}

/// The command-line name of a value-enum variant (`sd-turbo`, `vae-decode`).
pub fn name_of<T: ValueEnum>(value: T) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}
