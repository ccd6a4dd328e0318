//! The one-shot `generate` command: load a model, draw one image (from a
//! prompt, an init picture, or a picture and a mask), write a PNG.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use sd_core::embeddings::EmbeddingSet;
use sd_core::image::DecodedImage;
use sd_core::lora::{ActiveLora, LoraAdapter};
use sd_core::model::WeightVariant;
use sd_core::pipeline::{
    random_seed, DebugOptions, Defaults, GenerateParams, ImageInput, StableDiffusion, StepProgress,
    Trace,
};
use sd_core::presets::{self, Preset};
use sd_core::prompt::PromptSyntax;
use sd_core::schedulers::SchedulerKind;
use sd_core::Interrupt;
use sd_core::{Param, ParamError};

use crate::config::{Backend, ModelFlags, PrecisionArgs};
use crate::decoding::DecodingArgs;

/// The largest init picture or mask the command reads (64 megapixels).
const MAX_INPUT_PIXELS: usize = 64 << 20;

/// Arguments of `sd-worker-cpu generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// A local diffusers folder, a Hugging Face repo id or a single-file
    /// `.safetensors` checkpoint [default: the preset's repo].
    #[arg(long, required_unless_present = "sd_version")]
    pub model: Option<String>,
    /// What changes the model loaded: `--config`, `--vae`, `--prediction-type`.
    #[command(flatten)]
    pub model_flags: ModelFlags,
    /// A preset (v1-5, v2-1, xl, turbo, sd-turbo): its repo and its defaults for
    /// everything left out below.
    #[arg(long, value_parser = crate::config::parse_preset)]
    pub sd_version: Option<&'static Preset>,
    /// What to draw.
    #[arg(long)]
    pub prompt: String,
    /// What to steer away from.
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// How both prompts are read: a1111 (`(emphasis)`, `[less]`, `(word:1.3)`,
    /// BREAK, no 75-token limit) or plain (diffusers': as written, cut at 77 tokens).
    #[arg(long, env = "SD_WORKER_PROMPT_SYNTAX", default_value = "a1111")]
    pub prompt_syntax: PromptSyntax,
    /// How many of the text encoders' last layers both prompts skip (diffusers'
    /// `clip_skip`; AUTOMATIC1111's "Clip skip" N is N - 1).
    #[arg(long, default_value_t = 0)]
    pub clip_skip: usize,
    /// Denoising steps [default: the preset's].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Classifier-free guidance scale; 1 or less runs the conditional pass only [default: the preset's].
    #[arg(long)]
    pub guidance_scale: Option<f64>,
    /// Image width in pixels, a multiple of 8 [default: the init image's width
    /// rounded down to 8, else the preset's, else the model's native size].
    #[arg(long)]
    pub width: Option<usize>,
    /// Image height in pixels, a multiple of 8 [default: the init image's height
    /// rounded down to 8, else the preset's, else the model's native size].
    #[arg(long)]
    pub height: Option<usize>,
    /// Seed of the noise; drawn at random (and printed) when absent.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Scheduler [default: the preset's, else the model folder's own].
    #[arg(long)]
    pub scheduler: Option<SchedulerKind>,
    /// Read the `fp16` weight files when the model has both precisions (the
    /// dtypes they are kept and computed in are `--dtype`'s and `--compute-dtype`'s).
    #[arg(long)]
    pub fp16_weights: bool,
    /// `--dtype` and `--compute-dtype`, as the worker takes them.
    #[command(flatten)]
    pub precision: PrecisionArgs,
    /// PNG or JPEG to start from (image-to-image; inpainting with --mask-image).
    /// It is resized to the output size when that differs.
    #[arg(long)]
    pub init_image: Option<PathBuf>,
    /// PNG or JPEG mask for inpainting, the init image's size; white = repaint.
    #[arg(long, requires = "init_image")]
    pub mask_image: Option<PathBuf>,
    /// How much to change the init image, 0 to 1 [default: 0.8, or 1.0 with --mask-image].
    #[arg(long, requires = "init_image")]
    pub strength: Option<f64>,
    /// Safetensors file whose f32 `latents` tensor [1,4,H/8,W/8] replaces the seeded noise.
    #[arg(long)]
    pub init_latents: Option<PathBuf>,
    /// Write prompt/negative embeddings, start and final latents, the 0..1 image
    /// and the image-to-image intermediates to this safetensors file.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Where to write the PNG.
    #[arg(long)]
    pub output: PathBuf,
    /// Device index (the GPU for cuda and metal builds).
    #[arg(long, default_value_t = 0)]
    pub device: usize,
    /// The tiny autoencoder, the decoder and VAE tiling.
    #[command(flatten)]
    pub decoding: DecodingArgs,
    /// A LoRA `.safetensors` file to apply, with its strength after a colon
    /// (`style.safetensors:0.8`; 1 when absent); repeat for several.
    #[arg(long = "lora", value_name = "FILE[:STRENGTH]", value_parser = parse_lora)]
    pub loras: Vec<LoraFlag>,
    /// A folder of textual-inversion embeddings (`.safetensors`): each file's
    /// name, used in the prompt or the negative prompt, stands for its vectors.
    #[arg(long, value_name = "DIR")]
    pub embeddings_dir: Option<PathBuf>,
}

/// One `--lora FILE[:STRENGTH]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraFlag {
    /// The adapter's file.
    pub path: PathBuf,
    /// Its strength.
    pub strength: f32,
}

/// Reads `FILE[:STRENGTH]`: a suffix after the last colon that is a number
/// is the strength, else the whole value is the file.
fn parse_lora(value: &str) -> Result<LoraFlag, String> {
    let (path, strength) = match value.rsplit_once(':') {
        Some((path, strength)) if !path.is_empty() => match strength.parse::<f32>() {
            Ok(strength) if strength.is_finite() => (path, strength),
            Ok(_) => return Err(format!("the strength in {value:?} is not a finite number")),
            Err(_) => (value, 1.0),
        },
        _ => (value, 1.0),
    };
    if path.is_empty() {
        return Err("expected FILE[:STRENGTH]".into());
    }
    Ok(LoraFlag {
        path: PathBuf::from(path),
        strength,
    })
}

/// Runs the command on the binary's `backend`.
pub fn run(args: GenerateArgs, backend: Backend) -> anyhow::Result<()> {
    let image_input = read_image_input(&args)?;
    let device = backend.open_device(args.device)?;
    let debug = DebugOptions {
        init_latents: args
            .init_latents
            .as_deref()
            .map(|path| read_init_latents(path, &device))
            .transpose()?,
        trace: args.trace.is_some(),
    };
    let (mut model, spec) = load_model(&args, backend, &device)?;
    let params = resolve_params(&args, &model, &spec, image_input)?;
    apply_loras(&mut model, &args.loras)?;
    if let Some(dir) = &args.embeddings_dir {
        apply_embeddings(&mut model, dir)?;
    }

    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} step {pos}/{len} [{bar:30}] {elapsed} (eta {eta})")
            .expect("static progress template")
            .progress_chars("=> "),
    );
    let mut on_step = |progress: StepProgress| {
        bar.set_length(progress.total as u64);
        bar.set_position(progress.step as u64);
        ControlFlow::Continue(())
    };
    let image = model.generate_with(&params, &debug, Interrupt::NEVER, &mut on_step)?;
    bar.finish_and_clear();

    std::fs::write(&args.output, &image.png)
        .with_context(|| format!("writing {}", args.output.display()))?;
    if let (Some(path), Some(trace)) = (&args.trace, image.trace.clone()) {
        write_trace(&mut model, &params, trace, path)?;
    }
    let t = image.timings;
    eprintln!(
        "wrote {} ({}x{}, seed {}, {}, {} steps): text {:.2}s, denoise {:.2}s, decode {:.2}s",
        args.output.display(),
        image.width,
        image.height,
        image.seed,
        image.scheduler,
        image.steps_run,
        t.text_encoding.as_secs_f64(),
        t.denoising.as_secs_f64(),
        t.decoding.as_secs_f64(),
    );
    Ok(())
}

/// Reads the `--lora` files and fuses them into the model.
fn apply_loras(model: &mut StableDiffusion, loras: &[LoraFlag]) -> anyhow::Result<()> {
    let active = loras
        .iter()
        .map(|lora| {
            let adapter = LoraAdapter::read(&lora.path)
                .with_context(|| format!("--lora {}", lora.path.display()))?;
            Ok(ActiveLora {
                adapter: Arc::new(adapter),
                strength: lora.strength,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    model.set_loras(&active).context("--lora")?;
    Ok(())
}

/// Reads the `--embeddings-dir` embeddings and makes those the model can use
/// callable in prompts; the others are named on stderr with the reason.
fn apply_embeddings(model: &mut StableDiffusion, dir: &Path) -> anyhow::Result<()> {
    let (set, mut skipped) = EmbeddingSet::read_dir(dir)
        .with_context(|| format!("--embeddings-dir {}", dir.display()))?;
    skipped.extend(model.set_embeddings(&set)?);
    for s in &skipped {
        eprintln!("embedding {} skipped: {}", s.name, s.reason);
    }
    eprintln!(
        "embeddings: {} of {} usable",
        set.len()
            - skipped
                .iter()
                .filter(|s| set.get(&s.name).is_some())
                .count(),
        set.len()
    );
    Ok(())
}

/// Resolves `--model` or the preset's repository and loads it onto `device`;
/// returns the pipeline and the model's name as given.
fn load_model(
    args: &GenerateArgs,
    backend: Backend,
    device: &Device,
) -> anyhow::Result<(StableDiffusion, String)> {
    let variant = if args.fp16_weights {
        WeightVariant::Fp16
    } else {
        WeightVariant::Full
    };
    let spec = match (&args.model, args.sd_version) {
        (Some(model), _) => model.clone(),
        (None, Some(preset)) => preset.repo.to_string(),
        (None, None) => bail!("--model or --sd-version is required"),
    };
    let request = args.model_flags.request(&spec, variant)?;
    tracing::info!(model = %spec, ?device, "loading the pipeline");
    let options = args.precision.resolve(backend)?.load_options(variant);
    let mut model = StableDiffusion::load_request(&request, device, options)
        .with_context(|| format!("loading model {spec}"))?;
    args.decoding.apply(&mut model)?;
    Ok((model, spec))
}

/// The parameters of the image: the flags, then the defaults sd-core resolves
/// for this model (the same the worker uses), checked against the model.
fn resolve_params(
    args: &GenerateArgs,
    model: &StableDiffusion,
    spec: &str,
    image_input: Option<ImageInput>,
) -> anyhow::Result<GenerateParams> {
    let profile = model.profile();
    let defaults = Defaults::resolve(presets::in_force(args.sd_version, spec), &profile);
    let (width, height) = match &image_input {
        Some(input) => input
            .default_size(profile.vae_scale_factor)
            .map_err(|e| flag_error(args, e))?,
        None => (defaults.width, defaults.height),
    };
    let seed = args.seed.unwrap_or_else(random_seed);
    let params = GenerateParams {
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        prompt_syntax: args.prompt_syntax,
        clip_skip: args.clip_skip,
        steps: args.steps.unwrap_or(defaults.steps),
        guidance_scale: args.guidance_scale.unwrap_or(defaults.guidance_scale),
        width: args.width.unwrap_or(width),
        height: args.height.unwrap_or(height),
        seed,
        scheduler: Some(args.scheduler.unwrap_or(defaults.scheduler)),
        image: image_input,
        decoder: args.decoding.vae_decoder.decoder(),
    };
    params.check(&profile).map_err(|e| flag_error(args, e))?;
    if args.seed.is_none() {
        eprintln!("seed: {seed}");
    }
    Ok(params)
}

/// A rejected parameter, named by the flag that set it (and the file, for pictures).
fn flag_error(args: &GenerateArgs, error: ParamError) -> anyhow::Error {
    let file = |path: &Option<PathBuf>| {
        path.as_deref()
            .map_or_else(String::new, |p| format!(" {}", p.display()))
    };
    let flag = match error.param {
        Param::Image => format!("--init-image{}", file(&args.init_image)),
        Param::Mask => format!("--mask-image{}", file(&args.mask_image)),
        Param::Decoder => "--vae-decoder".to_string(),
        other => format!("--{}", other.as_str().replace('_', "-")),
    };
    anyhow::anyhow!("{flag}: {}", error.message)
}

/// Writes the intermediate tensors of a generation as f32 safetensors.
///
/// Without guidance the pipeline never encodes the negative prompt; it is
/// encoded here so every trace has the same keys as diffusers' references.
fn write_trace(
    model: &mut StableDiffusion,
    params: &GenerateParams,
    trace: Trace,
    path: &Path,
) -> anyhow::Result<()> {
    let (negative, negative_pooled) = match trace.negative_prompt_embeds {
        Some(hidden) => (hidden, trace.negative_pooled_prompt_embeds),
        None => {
            let encoding = params.prompt_encoding();
            let prompt = model.encode_prompt(&params.prompt, encoding)?;
            let (negative, _) =
                model.encode_negative(params.negative_prompt.as_deref(), prompt, encoding)?;
            (negative.hidden, negative.pooled)
        }
    };
    let (image_in, image_latents, noise, mask_image, mask, masked_image_latents) =
        match trace.image_input {
            Some(t) => (
                Some(t.image_in),
                t.image_latents,
                Some(t.noise),
                t.mask_image,
                t.mask,
                t.masked_image_latents,
            ),
            None => (None, None, None, None, None, None),
        };
    let timesteps = Tensor::new(trace.timesteps.as_slice(), &Device::Cpu)?;
    let tensors: HashMap<&str, Tensor> = [
        ("prompt_embeds", Some(trace.prompt_embeds)),
        ("negative_prompt_embeds", Some(negative)),
        ("pooled_prompt_embeds", trace.pooled_prompt_embeds),
        ("negative_pooled_prompt_embeds", negative_pooled),
        ("add_time_ids", trace.add_time_ids),
        ("timesteps", Some(timesteps)),
        ("latents_start", Some(trace.latents_start)),
        ("latents_final", Some(trace.latents_final)),
        ("image", Some(trace.image)),
        ("image_in", image_in),
        ("image_latents", image_latents),
        ("noise", noise),
        ("mask_image", mask_image),
        ("mask", mask),
        ("masked_image_latents", masked_image_latents),
    ]
    .into_iter()
    .filter_map(|(name, tensor)| tensor.map(|t| (name, t)))
    .collect();
    candle_core::safetensors::save(&tensors, path)
        .with_context(|| format!("writing trace {}", path.display()))
}

/// Reads the `latents` tensor of a safetensors file as f32.
fn read_init_latents(path: &Path, device: &Device) -> anyhow::Result<Tensor> {
    let mut tensors = candle_core::safetensors::load(path, device)
        .with_context(|| format!("reading --init-latents {}", path.display()))?;
    let latents = tensors
        .remove("latents")
        .with_context(|| format!("{} has no tensor named `latents`", path.display()))?;
    Ok(latents.to_dtype(DType::F32)?)
}

/// Reads `--init-image`, `--mask-image` and `--strength` into the pipeline's
/// image input (checked with the other parameters once the model is loaded).
fn read_image_input(args: &GenerateArgs) -> anyhow::Result<Option<ImageInput>> {
    let Some(path) = &args.init_image else {
        return Ok(None);
    };
    let image = read_picture(path, "--init-image")?;
    let mask = args
        .mask_image
        .as_deref()
        .map(|path| read_picture(path, "--mask-image"))
        .transpose()?;
    Ok(Some(ImageInput {
        strength: args
            .strength
            .unwrap_or(ImageInput::default_strength(mask.is_some())),
        image,
        mask,
    }))
}

/// Reads and decodes one picture, naming the flag and the file in errors.
fn read_picture(path: &Path, flag: &str) -> anyhow::Result<DecodedImage> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading {flag} {}", path.display()))?;
    DecodedImage::decode(&bytes, MAX_INPUT_PIXELS)
        .map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_flags_take_an_optional_strength() {
        let flag = |path: &str, strength: f32| LoraFlag {
            path: PathBuf::from(path),
            strength,
        };
        assert_eq!(
            parse_lora("a.safetensors").unwrap(),
            flag("a.safetensors", 1.0)
        );
        assert_eq!(
            parse_lora("a.safetensors:0.6").unwrap(),
            flag("a.safetensors", 0.6)
        );
        assert_eq!(
            parse_lora("dir/a:b.safetensors:-1").unwrap(),
            flag("dir/a:b.safetensors", -1.0)
        );
        assert_eq!(
            parse_lora("c:/x.safetensors").unwrap(),
            flag("c:/x.safetensors", 1.0)
        );
        assert!(parse_lora("").is_err());
        assert!(parse_lora("a.safetensors:inf").is_err());
    }
}
