//! The workloads of the figures, one function a component: seeded random
//! inputs for the `unet` and `vae-*` figures, the prompt for `text`, and for
//! `image` a whole generation through the production pipeline
//! ([`StableDiffusion::generate_with`], the loop every job runs).

use std::ops::ControlFlow;

use anyhow::Context;
use candle_core::{Device, Tensor};
use sd_core::pipeline::{BatchPlan, DebugOptions, GenerateParams, StableDiffusion};
use sd_core::prompt::{PromptSyntax, TextEncoders};
use sd_core::rng::TorchRng;
use sd_core::unet::{AddedCond, PerBlock, UNet2DConditionModel, UNetConfig};
use sd_core::vae::{AutoencoderKL, AutoencoderTiny, TilingMode, VaeTiling};
use sd_core::Interrupt;

use super::args::{BenchArgs, FigureSpec};
use super::load::PROMPT;
use super::measure::{repeat, RunOutput, Runs};

/// The timestep every `unet` figure runs at.
const TIMESTEP: f64 = 500.0;
/// Tokens of the text context the `unet` figures attend to.
const CONTEXT_TOKENS: usize = 77;

/// The prompt of run `run`: [`PROMPT`] with `run` trailing spaces. The
/// tokenizer drops them, so every run encodes the same ids, while the
/// pipeline's embedding cache (keyed by the text) misses: each run encodes its
/// prompt as a new job's would be. An absent negative prompt stays cached
/// after the first run, as in a serving worker.
fn run_prompt(run: usize) -> String {
    format!("{PROMPT}{}", " ".repeat(run))
}

/// One UNet pass on random latents and context (and SDXL's added conditioning).
pub fn unet_runs(
    unet: &UNet2DConditionModel,
    args: &BenchArgs,
    spec: &FigureSpec,
    rng: &mut TorchRng,
    device: &Device,
) -> anyhow::Result<Runs> {
    let config = unet.config();
    let latent = spec.size / 8;
    let sample = rng.randn_tensor(&[spec.batch, config.in_channels, latent, latent], device)?;
    let context_dim = match &config.cross_attention_dim {
        PerBlock::Same(d) => *d,
        PerBlock::Each(ds) => ds[0],
    };
    let context = rng.randn_tensor(&[spec.batch, CONTEXT_TOKENS, context_dim], device)?;
    let added = random_added_cond(config, spec.batch, rng, device)?;
    let mut inputs = vec![
        ("sample", sample.clone()),
        ("encoder_hidden_states", context.clone()),
        ("timestep", Tensor::new(&[TIMESTEP as f32], device)?),
    ];
    if let Some(added) = &added {
        inputs.push(("text_embeds", added.text_embeds.clone()));
        inputs.push(("time_ids", added.time_ids.clone()));
    }
    repeat(args, inputs, |_| {
        let out = unet.forward_with_cond(&sample, TIMESTEP, &context, added.as_ref())?;
        Ok(RunOutput::of(vec![("out", out)]))
    })
}

/// SDXL's pooled text embedding and six size ids, random (`None` for UNets
/// without added conditioning).
fn random_added_cond(
    config: &UNetConfig,
    batch: usize,
    rng: &mut TorchRng,
    device: &Device,
) -> anyhow::Result<Option<AddedCond>> {
    if !config.needs_added_cond() {
        return Ok(None);
    }
    let time_dim = config
        .addition_time_embed_dim
        .context("the unet config has no addition_time_embed_dim")?;
    let projection = config
        .projection_class_embeddings_input_dim
        .context("the unet config has no projection_class_embeddings_input_dim")?;
    let pooled_dim = projection
        .checked_sub(6 * time_dim)
        .context("projection_class_embeddings_input_dim leaves no room for the text embedding")?;
    Ok(Some(AddedCond {
        text_embeds: rng.randn_tensor(&[batch, pooled_dim], device)?,
        time_ids: rng.randn_tensor(&[batch, 6], device)?,
    }))
}

/// VAE decoding of one random latent, in tiles when `tiling` says so for
/// its size (the pipeline's decision).
pub fn vae_decode_runs(
    vae: &AutoencoderKL,
    tiling: TilingMode,
    args: &BenchArgs,
    spec: &FigureSpec,
    rng: &mut TorchRng,
    device: &Device,
) -> anyhow::Result<Runs> {
    let latent = spec.size / 8;
    let z = rng.randn_tensor(&[1, vae.config().latent_channels, latent, latent], device)?;
    let tiles = tiling.tiles(vae.config(), spec.size, spec.size);
    let geometry = VaeTiling::for_config(vae.config());
    repeat(args, vec![("latents", z.clone())], |_| {
        let out = if tiles {
            vae.decode_tiled(&z, &geometry, Interrupt::NEVER)?
        } else {
            vae.decode(&z)?
        };
        Ok(RunOutput::of(vec![("out", out)]))
    })
}

/// Tiny-autoencoder decoding of one random latent.
pub fn tiny_decode_runs(
    tiny: &AutoencoderTiny,
    args: &BenchArgs,
    spec: &FigureSpec,
    rng: &mut TorchRng,
    device: &Device,
) -> anyhow::Result<Runs> {
    let latent = spec.size / 8;
    let z = rng.randn_tensor(&[1, tiny.config().latent_channels, latent, latent], device)?;
    repeat(args, vec![("latents", z.clone())], |_| {
        Ok(RunOutput::of(vec![(
            "out",
            tiny.decode(&z, Interrupt::NEVER)?,
        )]))
    })
}

/// VAE encoding of one random picture in -1..1, in tiles when `tiling` says so.
pub fn vae_encode_runs(
    vae: &AutoencoderKL,
    tiling: TilingMode,
    args: &BenchArgs,
    spec: &FigureSpec,
    rng: &mut TorchRng,
    device: &Device,
) -> anyhow::Result<Runs> {
    let shape = [1, vae.config().in_channels, spec.size, spec.size];
    let image = (rng.randn_tensor(&shape, device)? * 0.5)?.clamp(-1f32, 1f32)?;
    let tiles = tiling.tiles(vae.config(), spec.size, spec.size);
    let geometry = VaeTiling::for_config(vae.config());
    repeat(args, vec![("image", image.clone())], |_| {
        let posterior = if tiles {
            vae.encode_tiled(&image, &geometry, Interrupt::NEVER)?
        } else {
            vae.encode(&image)?
        };
        Ok(RunOutput::of(vec![
            ("mean", posterior.mean),
            ("logvar", posterior.logvar),
        ]))
    })
}

/// Encoding the prompt with the pipeline's text encoders.
pub fn text_runs(
    encoders: &mut TextEncoders,
    ids: &[(&'static str, Tensor)],
    args: &BenchArgs,
) -> anyhow::Result<Runs> {
    repeat(args, ids.to_vec(), |run| {
        let embeds = encoders.encode(&run_prompt(run), PromptSyntax::Plain)?;
        let mut tensors = vec![("out", embeds.hidden)];
        tensors.extend(embeds.pooled.map(|pooled| ("pooled", pooled)));
        Ok(RunOutput::of(tensors))
    })
}

/// One whole image from the production pipeline: the prompt, no negative
/// prompt, the model's own scheduler, `--seed`; the trace it keeps (tensors
/// the loop computes anyway) shows whether the image is finite. With
/// `--images N`, N images of one job ([`StableDiffusion::generate_batch`],
/// as the worker runs a job of `num_images`), `--images-per-pass` at a time.
pub fn image_runs(
    pipeline: &mut StableDiffusion,
    args: &BenchArgs,
    spec: &FigureSpec,
) -> anyhow::Result<Runs> {
    let (steps, guidance_scale) = args.image_settings(spec.model);
    let debug = DebugOptions {
        init_latents: None,
        trace: true,
    };
    repeat(args, Vec::new(), |run| {
        let params = GenerateParams {
            prompt: run_prompt(run),
            negative_prompt: None,
            prompt_syntax: PromptSyntax::Plain,
            clip_skip: 0,
            steps,
            guidance_scale,
            width: spec.size,
            height: spec.size,
            seed: args.seed,
            scheduler: None,
            image: None,
            decoder: args.decoding.vae_decoder.decoder(),
        };
        if args.images > 1 {
            return batch_run(pipeline, &params, args.image_plan());
        }
        let image = pipeline.generate_with(&params, &debug, Interrupt::NEVER, &mut |_| {
            ControlFlow::Continue(())
        })?;
        let trace = image.trace.context("the pipeline kept no trace")?;
        let t = image.timings;
        Ok(RunOutput {
            tensors: vec![
                ("latents_start", trace.latents_start),
                ("latents_final", trace.latents_final),
                ("image", trace.image),
            ],
            stages: Some([
                t.text_encoding.as_secs_f64(),
                t.denoising.as_secs_f64(),
                t.decoding.as_secs_f64(),
            ]),
        })
    })
}

/// The images of one job of several; each image's pixels are checked to be
/// finite (as 0..255 values), the stages summed over the images.
fn batch_run(
    pipeline: &mut StableDiffusion,
    params: &GenerateParams,
    plan: BatchPlan,
) -> anyhow::Result<RunOutput> {
    let mut images = Vec::with_capacity(plan.images);
    pipeline.generate_batch(
        params,
        plan,
        Interrupt::NEVER,
        &mut |_| ControlFlow::Continue(()),
        &mut |_, image| images.push(image),
    )?;
    let mut stages = [0.0; 3];
    let mut pixels = Vec::new();
    for image in &images {
        let t = image.timings;
        stages[0] += t.text_encoding.as_secs_f64();
        stages[1] += t.denoising.as_secs_f64();
        stages[2] += t.decoding.as_secs_f64();
        pixels.extend(image.rgb.iter().map(|&v| f32::from(v)));
    }
    let len = pixels.len();
    Ok(RunOutput {
        tensors: vec![("images_rgb", Tensor::from_vec(pixels, len, &Device::Cpu)?)],
        stages: Some(stages),
    })
}
