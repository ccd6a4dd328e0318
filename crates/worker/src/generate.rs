//! The one-shot `generate` command.

use std::path::PathBuf;

use clap::Args;
use sd_contract::SchedulerKind;

/// Arguments of `sd-worker-cpu generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// A local diffusers folder or a Hugging Face repo id.
    #[arg(long)]
    pub model: String,
    /// What to draw.
    #[arg(long)]
    pub prompt: String,
    /// What to steer away from.
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// Denoising steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Classifier-free guidance scale; 1 or less runs the conditional pass only.
    #[arg(long)]
    pub guidance_scale: Option<f64>,
    /// Image width in pixels (a multiple of 8).
    #[arg(long)]
    pub width: Option<usize>,
    /// Image height in pixels (a multiple of 8).
    #[arg(long)]
    pub height: Option<usize>,
    /// Seed of the noise; drawn at random (and printed) when absent.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Scheduler; the model folder's own when absent.
    #[arg(long)]
    pub scheduler: Option<SchedulerKind>,
    /// Safetensors file whose `latents` tensor replaces the seeded noise.
    #[arg(long)]
    pub init_latents: Option<PathBuf>,
    /// Write intermediate tensors (embeddings, final latents, image) to this safetensors file.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Where to write the PNG.
    #[arg(long)]
    pub output: PathBuf,
}

/// Runs the command.
pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    anyhow::bail!("generate is not wired yet: {args:?}")
}
