//! The `bench` command: time full-size model architectures on this machine.
//!
//! The models are built from the public configs of SD 1.5, SD-Turbo (SD 2.1
//! shapes) and SDXL (`bench-configs/`) with deterministic random weights, or
//! loaded from a diffusers folder (`--weights`, as written by `--save-weights`).
//! Each figure (model × component × size × batch) runs in its own child process
//! by default, so its peak resident memory is its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::{Backend, Dtype};
use anyhow::{bail, Context};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use clap::{Args, ValueEnum};
use sd_core::clip::{ClipTextConfig, ClipTextModel};
use sd_core::model::files::ComponentFiles;
use sd_core::model::{Component, LoadOptions, WeightVariant};
use sd_core::rng::TorchRng;
use sd_core::schedulers::{build_scheduler, SchedulerConfig};
use sd_core::unet::{AddedCond, UNet2DConditionModel, UNetConfig};
use sd_core::vae::{AutoencoderKL, VaeConfig};
use serde::{Deserialize, Serialize};

/// The timestep every UNet figure runs at.
const TIMESTEP: f64 = 500.0;
/// Token ids of the benchmark prompt: BOS, ten words, EOS, then EOS padding to 77.
const PROMPT_WORDS: [u32; 10] = [320, 1125, 539, 320, 2368, 530, 320, 6765, 1900, 2867];
const BOS: u32 = 49406;
const EOS: u32 = 49407;
const SEQ_LEN: usize = 77;

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
    /// Encoding one 77-token prompt (both encoders for SDXL).
    Text,
    /// A whole image: prompts, `--steps` denoising steps, VAE decoding.
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
    /// Seed of the random weights and inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Storage dtype of the UNet's and text encoders' weight matrices, as the
    /// pipeline keeps them (random weights are drawn in f32 and rounded).
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    pub dtype: Dtype,
    /// Load the weights from this diffusers folder instead of drawing them
    /// (one model only; the folder's configs are used).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Write the random weights and configs of the (single) model as a diffusers
    /// folder here, then exit.
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
}

/// One measured figure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    /// The architecture.
    pub model: BenchModel,
    /// What was timed.
    pub component: BenchComponent,
    /// Image side in pixels (0 for text encoding).
    pub size: usize,
    /// UNet batch (1 for the other components; 2 for a guided image).
    pub batch: usize,
    /// Timed repetitions.
    pub reps: usize,
    /// Median seconds per repetition.
    pub median_s: f64,
    /// Fastest repetition.
    pub min_s: f64,
    /// Slowest repetition.
    pub max_s: f64,
    /// Seconds to build or load the weights.
    pub load_s: f64,
    /// Peak resident memory while building or loading the weights, MiB.
    pub load_peak_mib: f64,
    /// Peak resident memory during the timed runs (weights included), MiB.
    pub run_peak_mib: f64,
    /// Whether every output value was finite.
    pub finite: bool,
    /// For `image`: median seconds of text encoding, denoising and decoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<[f64; 3]>,
    /// For `image`: the denoising steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
}

/// Runs the command on the binary's `backend`.
pub fn run(args: BenchArgs, backend: Backend) -> anyhow::Result<()> {
    if let Some(threads) = args.threads {
        if threads == 0 {
            bail!("--threads must be at least 1");
        }
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    if let Some(size) = args.sizes.iter().find(|s| **s == 0 || **s % 8 != 0) {
        bail!("--sizes must be positive multiples of 8, got {size}");
    }
    if args.batches.contains(&0) {
        bail!("--batches must be at least 1");
    }
    let single_model = || match args.models.as_slice() {
        [model] => Ok(*model),
        _ => bail!("--weights and --save-weights take exactly one model"),
    };
    if let Some(dir) = &args.save_weights {
        return save_weights(single_model()?, args.seed, dir);
    }
    if args.weights.is_some() {
        single_model()?;
    }
    if args.in_process {
        if !args.default_allocator {
            sd_core::layers::tune_allocator();
        }
        let device = backend.open_device(args.device)?;
        let figures = run_figures(&args, &device)?;
        return report(&args, &figures);
    }
    let mut figures = Vec::new();
    for job in jobs(&args) {
        let lines = run_child(&args, &job)?;
        for line in lines {
            if args.json {
                println!("{line}");
            }
            figures.push(serde_json::from_str::<Figure>(&line).context("child output")?);
        }
    }
    if !args.json {
        print_table(&figures);
    }
    Ok(())
}

/// One figure to run: model, component, size, batch.
#[derive(Debug, Clone, Copy)]
struct Job {
    model: BenchModel,
    component: BenchComponent,
    size: usize,
    batch: usize,
}

/// Every figure the arguments select, in order.
fn jobs(args: &BenchArgs) -> Vec<Job> {
    let mut jobs = Vec::new();
    for &model in &args.models {
        for &component in &args.components {
            let sizes: &[usize] = match component {
                BenchComponent::Text => &[0],
                _ => &args.sizes,
            };
            let batches: &[usize] = match component {
                BenchComponent::Unet => &args.batches,
                _ => &[1],
            };
            for &size in sizes {
                for &batch in batches {
                    jobs.push(Job {
                        model,
                        component,
                        size,
                        batch,
                    });
                }
            }
        }
    }
    jobs
}

/// Runs one figure in a child process and returns its JSON lines.
fn run_child(args: &BenchArgs, job: &Job) -> anyhow::Result<Vec<String>> {
    let exe = std::env::current_exe().context("locating the benchmark executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("bench")
        .arg("--in-process")
        .arg("--json")
        .args(["--models", name_of(job.model)])
        .args(["--components", name_of(job.component)])
        .args(["--sizes", &job.size.max(8).to_string()])
        .args(["--batches", &job.batch.to_string()])
        .args(["--reps", &args.reps.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
        .args(["--seed", &args.seed.to_string()])
        .args(["--device", &args.device.to_string()])
        .args(["--dtype", args.dtype.as_str()]);
    if let Some(steps) = args.steps {
        cmd.args(["--steps", &steps.to_string()]);
    }
    if let Some(guidance) = args.guidance_scale {
        cmd.args(["--guidance-scale", &guidance.to_string()]);
    }
    if args.default_allocator {
        cmd.arg("--default-allocator");
    }
    for (flag, path) in [("--weights", &args.weights), ("--dump", &args.dump)] {
        if let Some(path) = path {
            cmd.arg(flag).arg(path);
        }
    }
    let output = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("starting a benchmark child process")?;
    if !output.status.success() {
        bail!(
            "benchmark of {} {} at {} px, batch {} failed ({})",
            name_of(job.model),
            name_of(job.component),
            job.size,
            job.batch,
            output.status
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(str::to_string)
        .collect())
}

/// The command-line name of a value-enum variant.
fn name_of<T: ValueEnum>(value: T) -> &'static str {
    let name = value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    Box::leak(name.into_boxed_str())
}

/// Prints the figures as JSON lines or as a table.
fn report(args: &BenchArgs, figures: &[Figure]) -> anyhow::Result<()> {
    if args.json {
        for figure in figures {
            println!("{}", serde_json::to_string(figure)?);
        }
    } else {
        print_table(figures);
    }
    Ok(())
}

fn print_table(figures: &[Figure]) {
    println!(
        "{:<9} {:<11} {:>5} {:>3} {:>9} {:>9} {:>9} {:>8} {:>10} {:>10}  note",
        "model",
        "component",
        "size",
        "b",
        "median_s",
        "min_s",
        "max_s",
        "load_s",
        "peak_MiB",
        "load_MiB"
    );
    for f in figures {
        let mut note = String::new();
        if let (Some([text, denoise, decode]), Some(steps)) = (f.stages, f.steps) {
            let total = text + denoise + decode;
            note = format!(
                "{steps} steps: text {text:.2}s ({:.0}%), denoise {denoise:.2}s ({:.0}%), decode {decode:.2}s ({:.0}%)",
                100.0 * text / total,
                100.0 * denoise / total,
                100.0 * decode / total
            );
        }
        if !f.finite {
            note.push_str(" NON-FINITE OUTPUT");
        }
        println!(
            "{:<9} {:<11} {:>5} {:>3} {:>9.3} {:>9.3} {:>9.3} {:>8.2} {:>10.0} {:>10.0}  {}",
            name_of(f.model),
            name_of(f.component),
            f.size,
            f.batch,
            f.median_s,
            f.min_s,
            f.max_s,
            f.load_s,
            f.run_peak_mib,
            f.load_peak_mib,
            note
        );
    }
}

/// Runs every selected figure in this process, on `device`.
fn run_figures(args: &BenchArgs, device: &Device) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for &model in &args.models {
        for &component in &args.components {
            reset_peak_rss();
            let started = Instant::now();
            let source = WeightSource::new(model, args, device)?;
            let loaded = Loaded::load(&source, component)?;
            let load_s = started.elapsed().as_secs_f64();
            let load_peak_mib = peak_rss_mib();
            drop(source);
            for job in jobs(args)
                .into_iter()
                .filter(|j| j.model == model && j.component == component)
            {
                let mut figure = loaded.measure(args, &job, device)?;
                figure.load_s = load_s;
                figure.load_peak_mib = load_peak_mib;
                figures.push(figure);
            }
        }
    }
    Ok(figures)
}

/// Where a model's configs and weights come from.
struct WeightSource {
    model: BenchModel,
    folder: Option<PathBuf>,
    seed: u64,
    options: LoadOptions,
    device: Device,
}

impl WeightSource {
    fn new(model: BenchModel, args: &BenchArgs, device: &Device) -> anyhow::Result<Self> {
        Ok(Self {
            model,
            folder: args.weights.clone(),
            seed: args.seed,
            options: LoadOptions {
                variant: WeightVariant::Full,
                weight_dtype: args.dtype.storage(),
            },
            device: device.clone(),
        })
    }

    /// The config text of a component: the folder's, or the bundled public one.
    fn config(&self, component: Component) -> anyhow::Result<String> {
        match &self.folder {
            Some(folder) => {
                let path = folder.join(component.config_file());
                std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))
            }
            None => bundled_config(self.model, component.folder())
                .map(str::to_string)
                .with_context(|| format!("{} has no {}", name_of(self.model), component.folder())),
        }
    }

    /// A var builder over the folder's weights or over fresh random ones, in
    /// the dtype the pipeline would read `component` in.
    fn var_builder(&self, component: Component) -> anyhow::Result<VarBuilder<'static>> {
        let dtype = self.options.dtype_for(component);
        match &self.folder {
            Some(folder) => {
                let files = ComponentFiles::find(folder, component, self.options.variant)?;
                Ok(files.var_builder(dtype, &self.device)?)
            }
            None => {
                let backend =
                    RandomBackend::new(self.seed, component == Component::TextEncoder2, false);
                Ok(VarBuilder::from_backend(
                    Box::new(backend),
                    dtype,
                    self.device.clone(),
                ))
            }
        }
    }
}

/// The public `config.json` of a component, as bundled in `bench-configs/`.
fn bundled_config(model: BenchModel, component: &str) -> Option<&'static str> {
    Some(match (model, component) {
        (BenchModel::Sd15, "unet") => include_str!("../../bench-configs/sd15/unet.json"),
        (BenchModel::Sd15, "vae") => include_str!("../../bench-configs/sd15/vae.json"),
        (BenchModel::Sd15, "text_encoder") => {
            include_str!("../../bench-configs/sd15/text_encoder.json")
        }
        (BenchModel::Sd15, "scheduler") => include_str!("../../bench-configs/sd15/scheduler.json"),
        (BenchModel::SdTurbo, "unet") => include_str!("../../bench-configs/sd-turbo/unet.json"),
        (BenchModel::SdTurbo, "vae") => include_str!("../../bench-configs/sd-turbo/vae.json"),
        (BenchModel::SdTurbo, "text_encoder") => {
            include_str!("../../bench-configs/sd-turbo/text_encoder.json")
        }
        (BenchModel::SdTurbo, "scheduler") => {
            include_str!("../../bench-configs/sd-turbo/scheduler.json")
        }
        (BenchModel::Sdxl, "unet") => include_str!("../../bench-configs/sdxl/unet.json"),
        (BenchModel::Sdxl, "vae") => include_str!("../../bench-configs/sdxl/vae.json"),
        (BenchModel::Sdxl, "text_encoder") => {
            include_str!("../../bench-configs/sdxl/text_encoder.json")
        }
        (BenchModel::Sdxl, "text_encoder_2") => {
            include_str!("../../bench-configs/sdxl/text_encoder_2.json")
        }
        (BenchModel::Sdxl, "scheduler") => include_str!("../../bench-configs/sdxl/scheduler.json"),
        _ => return None,
    })
}

/// The text encoders of a model (one, or two for SDXL).
fn text_components(model: BenchModel) -> &'static [Component] {
    match model {
        BenchModel::Sdxl => &[Component::TextEncoder, Component::TextEncoder2],
        _ => &[Component::TextEncoder],
    }
}

/// The models one figure needs, built.
struct Loaded {
    model: BenchModel,
    unet: Option<UNet2DConditionModel>,
    vae: Option<AutoencoderKL>,
    text: Vec<ClipTextModel>,
    scheduler: Option<SchedulerConfig>,
}

impl Loaded {
    fn load(source: &WeightSource, component: BenchComponent) -> anyhow::Result<Self> {
        let need_unet = matches!(component, BenchComponent::Unet | BenchComponent::Image);
        let need_vae = matches!(
            component,
            BenchComponent::VaeDecode | BenchComponent::VaeEncode | BenchComponent::Image
        );
        let need_text = matches!(component, BenchComponent::Text | BenchComponent::Image);
        let unet = if need_unet {
            let cfg: UNetConfig = serde_json::from_str(&source.config(Component::Unet)?)
                .context("parsing the unet config")?;
            let vb = source.var_builder(Component::Unet)?;
            Some(UNet2DConditionModel::new(vb, &cfg)?)
        } else {
            None
        };
        let vae = if need_vae {
            let cfg: VaeConfig = serde_json::from_str(&source.config(Component::Vae)?)
                .context("parsing the vae config")?;
            let vb = source.var_builder(Component::Vae)?;
            Some(AutoencoderKL::new(vb, &cfg)?)
        } else {
            None
        };
        let mut text = Vec::new();
        if need_text {
            for &component in text_components(source.model) {
                let cfg: ClipTextConfig = serde_json::from_str(&source.config(component)?)
                    .with_context(|| format!("parsing the {} config", component.folder()))?;
                let vb = source.var_builder(component)?;
                text.push(ClipTextModel::new(vb, &cfg)?);
            }
        }
        let scheduler = if component == BenchComponent::Image {
            let text = match &source.folder {
                Some(folder) => {
                    let path = folder.join("scheduler/scheduler_config.json");
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?
                }
                None => bundled_config(source.model, "scheduler")
                    .unwrap_or_default()
                    .to_string(),
            };
            Some(SchedulerConfig::from_json_str(&text).context("parsing the scheduler config")?)
        } else {
            None
        };
        Ok(Self {
            model: source.model,
            unet,
            vae,
            text,
            scheduler,
        })
    }

    /// Times one figure.
    fn measure(&self, args: &BenchArgs, job: &Job, device: &Device) -> anyhow::Result<Figure> {
        let mut rng = TorchRng::new(args.seed);
        let latent = job.size / 8;
        let mut dump: HashMap<String, Tensor> = HashMap::new();
        let mut stages: Vec<[f64; 3]> = Vec::new();
        let mut finite = true;
        let mut run: Box<dyn FnMut() -> anyhow::Result<()> + '_> = match job.component {
            BenchComponent::Unet => {
                let unet = self.unet.as_ref().context("unet not loaded")?;
                let cfg = unet.config();
                let sample =
                    rng.randn_tensor(&[job.batch, cfg.in_channels, latent, latent], device)?;
                let context_dim = match &cfg.cross_attention_dim {
                    sd_core::unet::PerBlock::Same(d) => *d,
                    sd_core::unet::PerBlock::Each(ds) => ds[0],
                };
                let context = rng.randn_tensor(&[job.batch, SEQ_LEN, context_dim], device)?;
                let added = if cfg.needs_added_cond() {
                    let text_embeds = rng.randn_tensor(&[job.batch, 1280], device)?;
                    let time_ids = time_ids(job.size, job.batch, device)?;
                    dump.insert("text_embeds".into(), text_embeds.clone());
                    dump.insert("time_ids".into(), time_ids.clone());
                    Some(AddedCond {
                        text_embeds,
                        time_ids,
                    })
                } else {
                    None
                };
                dump.insert("sample".into(), sample.clone());
                dump.insert("encoder_hidden_states".into(), context.clone());
                dump.insert("timestep".into(), Tensor::new(&[TIMESTEP as f32], device)?);
                let dump = &mut dump;
                let finite = &mut finite;
                Box::new(move || {
                    let out =
                        unet.forward_with_cond(&sample, TIMESTEP, &context, added.as_ref())?;
                    *finite &= all_finite(&out)?;
                    dump.insert("out".into(), out);
                    Ok(())
                })
            }
            BenchComponent::VaeDecode => {
                let vae = self.vae.as_ref().context("vae not loaded")?;
                let c = vae.config().latent_channels;
                let z = rng.randn_tensor(&[1, c, latent, latent], device)?;
                dump.insert("latents".into(), z.clone());
                let dump = &mut dump;
                let finite = &mut finite;
                Box::new(move || {
                    let out = vae.decode(&z)?;
                    *finite &= all_finite(&out)?;
                    dump.insert("out".into(), out);
                    Ok(())
                })
            }
            BenchComponent::VaeEncode => {
                let vae = self.vae.as_ref().context("vae not loaded")?;
                let c = vae.config().in_channels;
                let image = (rng.randn_tensor(&[1, c, job.size, job.size], device)? * 0.5)?
                    .clamp(-1f32, 1f32)?;
                dump.insert("image".into(), image.clone());
                let dump = &mut dump;
                let finite = &mut finite;
                Box::new(move || {
                    let posterior = vae.encode(&image)?;
                    *finite &= all_finite(&posterior.mean)? && all_finite(&posterior.logvar)?;
                    dump.insert("mean".into(), posterior.mean);
                    dump.insert("logvar".into(), posterior.logvar);
                    Ok(())
                })
            }
            BenchComponent::Text => {
                let ids = prompt_ids(true, device)?;
                dump.insert("input_ids".into(), ids.to_dtype(DType::I64)?);
                let dump = &mut dump;
                let finite = &mut finite;
                Box::new(move || {
                    let (context, pooled) = self.encode_text(&ids)?;
                    *finite &= all_finite(&context)?;
                    dump.insert("out".into(), context);
                    if let Some(pooled) = pooled {
                        dump.insert("pooled".into(), pooled);
                    }
                    Ok(())
                })
            }
            BenchComponent::Image => {
                let (steps, guidance) = self.image_settings(args);
                let dump = &mut dump;
                let stages = &mut stages;
                let finite = &mut finite;
                let size = job.size;
                Box::new(move || {
                    let (image, times) =
                        self.image(size, steps, guidance, args.seed, device, dump)?;
                    *finite &= all_finite(&image)?;
                    stages.push(times);
                    Ok(())
                })
            }
        };
        for _ in 0..args.warmup {
            run()?;
        }
        reset_peak_rss();
        let mut times = Vec::with_capacity(args.reps);
        for _ in 0..args.reps {
            let started = Instant::now();
            run()?;
            times.push(started.elapsed().as_secs_f64());
        }
        drop(run);
        let run_peak_mib = peak_rss_mib();
        let (steps, batch) = match job.component {
            BenchComponent::Image => {
                let (steps, guidance) = self.image_settings(args);
                (Some(steps), if guidance > 1.0 { 2 } else { 1 })
            }
            _ => (None, job.batch),
        };
        let stages = (!stages.is_empty()).then(|| {
            let timed = &stages[stages.len().saturating_sub(args.reps)..];
            let pick = |i: usize| median(&timed.iter().map(|s| s[i]).collect::<Vec<_>>());
            [pick(0), pick(1), pick(2)]
        });
        if let Some(dir) = &args.dump {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let path = dir.join(format!(
                "{}-{}-{}-b{}.safetensors",
                name_of(self.model),
                name_of(job.component),
                job.size,
                job.batch
            ));
            candle_core::safetensors::save(&dump, &path)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        Ok(Figure {
            model: self.model,
            component: job.component,
            size: job.size,
            batch,
            reps: args.reps,
            median_s: median(&times),
            min_s: sorted[0],
            max_s: sorted[sorted.len() - 1],
            load_s: 0.0,
            load_peak_mib: 0.0,
            run_peak_mib,
            finite,
            stages,
            steps,
        })
    }

    /// Steps and guidance of the `image` figure.
    fn image_settings(&self, args: &BenchArgs) -> (usize, f64) {
        let turbo = self.model == BenchModel::SdTurbo;
        let steps = args.steps.unwrap_or(if turbo { 1 } else { 4 });
        let guidance = args.guidance_scale.unwrap_or(if turbo { 0.0 } else { 7.5 });
        (steps, guidance)
    }

    /// The UNet context `[1, 77, D]` of one prompt, and SDXL's pooled embedding.
    fn encode_text(&self, ids: &Tensor) -> anyhow::Result<(Tensor, Option<Tensor>)> {
        match self.text.as_slice() {
            [one] => Ok((one.forward(ids)?.last_hidden_state, None)),
            [first, second] => {
                let a = first.forward(ids)?;
                let b = second.forward(ids)?;
                let penultimate = |hs: &[Tensor]| hs[hs.len() - 2].clone();
                let context = Tensor::cat(
                    &[penultimate(&a.hidden_states), penultimate(&b.hidden_states)],
                    2,
                )?;
                Ok((context, b.text_embeds))
            }
            _ => bail!("text encoders not loaded"),
        }
    }

    /// One whole image on `device`; returns it (0..1) and the seconds of its
    /// three stages (each waits for the device to finish, so GPU timings hold).
    fn image(
        &self,
        size: usize,
        steps: usize,
        guidance: f64,
        seed: u64,
        device: &Device,
        dump: &mut HashMap<String, Tensor>,
    ) -> anyhow::Result<(Tensor, [f64; 3])> {
        let unet = self.unet.as_ref().context("unet not loaded")?;
        let vae = self.vae.as_ref().context("vae not loaded")?;
        let scheduler_cfg = self.scheduler.as_ref().context("scheduler not loaded")?;
        let guided = guidance > 1.0;

        let started = Instant::now();
        let prompt = prompt_ids(true, device)?;
        let (cond, cond_pooled) = self.encode_text(&prompt)?;
        let (context, pooled) = if guided {
            let (uncond, uncond_pooled) = self.encode_text(&prompt_ids(false, device)?)?;
            let pooled = match (uncond_pooled, cond_pooled) {
                (Some(u), Some(c)) => Some(Tensor::cat(&[u, c], 0)?),
                _ => None,
            };
            (Tensor::cat(&[uncond, cond], 0)?, pooled)
        } else {
            (cond, cond_pooled)
        };
        device.synchronize()?;
        let text_s = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let batch = context.dim(0)?;
        let added = match pooled {
            Some(text_embeds) if unet.config().needs_added_cond() => Some(AddedCond {
                text_embeds,
                time_ids: time_ids(size, batch, device)?,
            }),
            _ => None,
        };
        let mut scheduler = build_scheduler(None, scheduler_cfg, steps)?;
        let mut rng = TorchRng::new(seed);
        let latent = size / 8;
        let noise = rng.randn_tensor(&[1, unet.config().in_channels, latent, latent], device)?;
        let mut latents = (&noise * scheduler.init_noise_sigma())?;
        let timesteps = scheduler.timesteps().to_vec();
        for (index, &timestep) in timesteps.iter().enumerate() {
            let input = if guided {
                Tensor::cat(&[&latents, &latents], 0)?
            } else {
                latents.clone()
            };
            let input = scheduler.scale_model_input(&input, index)?;
            let prediction = unet.forward_with_cond(&input, timestep, &context, added.as_ref())?;
            let prediction = if guided {
                let uncond = prediction.narrow(0, 0, 1)?;
                let cond = prediction.narrow(0, 1, 1)?;
                (&uncond + ((cond - &uncond)? * guidance)?)?
            } else {
                prediction
            };
            latents = scheduler.step(&prediction, index, &latents, &mut rng)?;
        }
        device.synchronize()?;
        let denoise_s = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let z = (&latents / vae.config().scaling_factor)?;
        let image = ((vae.decode(&z)? / 2.0)? + 0.5)?.clamp(0f32, 1f32)?;
        device.synchronize()?;
        let decode_s = started.elapsed().as_secs_f64();

        dump.insert("noise".into(), noise);
        dump.insert("latents_final".into(), latents);
        dump.insert("image".into(), image.clone());
        Ok((image, [text_s, denoise_s, decode_s]))
    }
}

/// SDXL's size conditioning `[B, 6]`: original size, crop (0, 0), target size.
fn time_ids(size: usize, batch: usize, device: &Device) -> candle_core::Result<Tensor> {
    let s = size as f32;
    let row = [s, s, 0.0, 0.0, s, s];
    let data: Vec<f32> = (0..batch).flat_map(|_| row).collect();
    Tensor::from_vec(data, (batch, 6), device)
}

/// The benchmark prompt (`cond`) or the empty prompt, as `[1, 77]` u32 ids.
fn prompt_ids(cond: bool, device: &Device) -> candle_core::Result<Tensor> {
    let mut ids = vec![BOS];
    if cond {
        ids.extend(PROMPT_WORDS);
    }
    ids.resize(SEQ_LEN, EOS);
    Tensor::from_vec(ids, (1, SEQ_LEN), device)
}

fn all_finite(t: &Tensor) -> candle_core::Result<bool> {
    let sum = t
        .abs()?
        .sum_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    Ok(sum.is_finite())
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Resets the kernel's peak-RSS counter (`VmHWM`) to the current RSS.
fn reset_peak_rss() {
    // Writing 5 to clear_refs resets VmHWM (Linux ≥ 4.0); elsewhere the peak
    // simply stays the process-wide one.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// `VmHWM` of this process in MiB (0 where /proc is unavailable).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A var builder backend that draws every requested tensor from a counter-based
/// generator keyed by the seed and the tensor's name, so the same name always
/// gets the same values. Matrices are uniform in ±1/√fan_in (PyTorch's default
/// scale), norm weights 1 ± 0.1, biases ± 0.02.
struct RandomBackend {
    seed: u64,
    projection: bool,
    record: Option<Mutex<HashMap<String, Tensor>>>,
}

impl RandomBackend {
    /// `projection`: whether a root `text_projection` exists (SDXL's second
    /// encoder); `record`: keep every tensor handed out, for saving.
    fn new(seed: u64, projection: bool, record: bool) -> Self {
        Self {
            seed,
            projection,
            record: record.then(|| Mutex::new(HashMap::new())),
        }
    }

    fn take_recorded(&self) -> HashMap<String, Tensor> {
        self.record
            .as_ref()
            .map(|r| std::mem::take(&mut *r.lock().unwrap_or_else(|e| e.into_inner())))
            .unwrap_or_default()
    }
}

impl SimpleBackend for RandomBackend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _hints: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let dims = shape.dims();
        let (offset, bound) = match dims.len() {
            0 | 1 if name.ends_with("weight") => (1.0, 0.1),
            0 | 1 => (0.0, 0.02),
            _ => {
                let fan_in = shape.elem_count() / dims[0].max(1);
                (0.0, 1.0 / (fan_in.max(1) as f32).sqrt())
            }
        };
        let values = random_values(self.seed, name, shape.elem_count(), offset, bound);
        let tensor = Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?;
        if let Some(record) = &self.record {
            record
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.to_string(), tensor.clone());
        }
        Ok(tensor)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _device: &Device,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights need a shape, none given for {name}")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        // The modern diffusers / transformers names exist; legacy VAE attention
        // names and unprefixed CLIP names do not.
        let legacy = ["query.", "key.", "value.", "proj_attn."];
        let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
        let leaf = stem.rsplit('.').next().unwrap_or(stem);
        if legacy.iter().any(|l| l.trim_end_matches('.') == leaf) {
            return false;
        }
        if name == "text_projection.weight" {
            return self.projection;
        }
        !name.starts_with("embeddings.")
    }
}

/// `n` values `offset + bound · u`, `u` uniform in [-1, 1), from splitmix64 over
/// the index, keyed by the seed and an FNV-1a hash of `name`.
fn random_values(seed: u64, name: &str, n: usize, offset: f32, bound: f32) -> Vec<f32> {
    let mut key = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for byte in name.bytes() {
        key ^= u64::from(byte);
        key = key.wrapping_mul(0x0100_0000_01b3);
    }
    let mut out = Vec::with_capacity(n);
    let scale = bound * 2.0 / (1u64 << 24) as f32;
    let mut state = key;
    while out.len() < n {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        for half in [z as u32, (z >> 32) as u32] {
            if out.len() < n {
                let u = (half >> 8) as f32 * scale - bound;
                out.push(offset + u);
            }
        }
    }
    out
}

/// Writes a model's random weights and configs as a diffusers folder.
fn save_weights(model: BenchModel, seed: u64, dir: &Path) -> anyhow::Result<()> {
    let device = Device::Cpu;
    let mut components = vec![Component::Unet, Component::Vae];
    components.extend_from_slice(text_components(model));
    for component in components {
        let sub = dir.join(component.folder());
        std::fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
        let config = bundled_config(model, component.folder())
            .with_context(|| format!("no bundled {} config", component.folder()))?;
        std::fs::write(sub.join("config.json"), config)
            .with_context(|| format!("writing {}/config.json", sub.display()))?;
        let backend = std::sync::Arc::new(RandomBackend::new(
            seed,
            component == Component::TextEncoder2,
            true,
        ));
        let vb = VarBuilder::from_backend(
            Box::new(SharedBackend(backend.clone())),
            DType::F32,
            device.clone(),
        );
        match component {
            Component::Unet => {
                UNet2DConditionModel::new(vb, &serde_json::from_str(config)?)?;
            }
            Component::Vae => {
                AutoencoderKL::new(vb, &serde_json::from_str(config)?)?;
            }
            Component::TextEncoder | Component::TextEncoder2 => {
                ClipTextModel::new(vb, &serde_json::from_str(config)?)?;
            }
        }
        let tensors = backend.take_recorded();
        let stem = match component {
            Component::Unet | Component::Vae => "diffusion_pytorch_model",
            _ => "model",
        };
        let path = sub.join(format!("{stem}.safetensors"));
        candle_core::safetensors::save(&tensors, &path)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {} ({} tensors)", path.display(), tensors.len());
    }
    let scheduler = dir.join("scheduler");
    std::fs::create_dir_all(&scheduler)
        .with_context(|| format!("creating {}", scheduler.display()))?;
    std::fs::write(
        scheduler.join("scheduler_config.json"),
        bundled_config(model, "scheduler").unwrap_or_default(),
    )
    .with_context(|| format!("writing {}", scheduler.display()))?;
    Ok(())
}

/// Lets [`save_weights`] keep a handle on the backend the var builder owns.
struct SharedBackend(std::sync::Arc<RandomBackend>);

impl SimpleBackend for SharedBackend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        hints: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0.get(shape, name, hints, dtype, device)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0.get_unchecked(name, dtype, device)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains_tensor(name)
    }
}
