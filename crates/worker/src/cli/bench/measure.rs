//! Timing one figure: `--warmup` untimed runs of its workload, then `--reps`
//! timed ones, summed up as a [`Figure`] (the `image` figure with the stage
//! timings the pipeline reports).

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use sd_core::layers::work::{self, MultiplyAdds};
use sd_core::rng::TorchRng;

use super::args::{name_of, BenchArgs, BenchComponent, FigureSpec};
use super::load::Loaded;
use super::memory::{peak_rss_mib, reset_peak_rss};
use super::report::{median, min_max, Figure};
use super::workloads::{
    image_runs, text_runs, tiny_decode_runs, unet_runs, vae_decode_runs, vae_encode_runs,
};

/// The outputs of one run, and an image's stage seconds.
pub struct RunOutput {
    /// Named outputs, checked to be finite and kept for `--dump`.
    pub tensors: Vec<(&'static str, Tensor)>,
    /// Seconds of text encoding, denoising and decoding, for an image.
    pub stages: Option<[f64; 3]>,
}

impl RunOutput {
    /// Outputs without stages.
    pub fn of(tensors: Vec<(&'static str, Tensor)>) -> Self {
        Self {
            tensors,
            stages: None,
        }
    }
}

/// The timed runs of one figure.
pub struct Runs {
    times: Vec<f64>,
    stages: Vec<[f64; 3]>,
    finite: bool,
    run_peak_mib: f64,
    /// Multiply-adds of one timed run (the mean over them).
    macs: MultiplyAdds,
    /// The inputs and the last run's outputs, for `--dump`.
    dump: HashMap<String, Tensor>,
}

impl Loaded {
    /// Times one figure (load time and memory are the caller's to fill in).
    pub fn measure(
        &mut self,
        args: &BenchArgs,
        spec: &FigureSpec,
        device: &Device,
    ) -> anyhow::Result<Figure> {
        let mut rng = TorchRng::new(args.seed);
        let runs = match self {
            Loaded::Unet(unet) => unet_runs(unet, args, spec, &mut rng, device)?,
            Loaded::Vae(vae, tiling) if spec.component == BenchComponent::VaeEncode => {
                vae_encode_runs(vae, *tiling, args, spec, &mut rng, device)?
            }
            Loaded::Vae(vae, tiling) => {
                vae_decode_runs(vae, *tiling, args, spec, &mut rng, device)?
            }
            Loaded::Tiny(tiny) => tiny_decode_runs(tiny, args, spec, &mut rng, device)?,
            Loaded::Text(encoders, ids) => text_runs(encoders, ids, args)?,
            Loaded::Image(pipeline) => image_runs(pipeline, args, spec)?,
        };
        if let Some(dir) = &args.dump {
            write_dump(dir, spec, &runs.dump)?;
        }
        let (batch, steps) = match spec.component {
            BenchComponent::Image => {
                let (steps, guidance) = args.image_settings(spec.model);
                let rows = if guidance > 1.0 { 2 } else { 1 };
                (rows * args.image_plan().per_pass, Some(steps))
            }
            _ => (spec.batch, None),
        };
        let (min_s, max_s) = min_max(&runs.times);
        let stage = |i: usize| median(&runs.stages.iter().map(|s| s[i]).collect::<Vec<_>>());
        Ok(Figure {
            model: spec.model,
            component: spec.component,
            size: spec.size,
            batch,
            reps: args.reps,
            median_s: median(&runs.times),
            min_s,
            max_s,
            load_s: 0.0,
            load_peak_mib: 0.0,
            run_peak_mib: runs.run_peak_mib,
            finite: runs.finite,
            stages: (!runs.stages.is_empty()).then(|| [stage(0), stage(1), stage(2)]),
            steps,
            f32_macs: runs.macs.f32,
            bf16_macs: runs.macs.bf16,
        })
    }
}

/// Runs `run` (given the run's index) `--warmup` times, then `--reps` times
/// timed; every output is checked to be finite, outside the timing.
pub fn repeat(
    args: &BenchArgs,
    inputs: Vec<(&'static str, Tensor)>,
    mut run: impl FnMut(usize) -> anyhow::Result<RunOutput>,
) -> anyhow::Result<Runs> {
    let mut finite = true;
    let mut last = Vec::new();
    let mut keep = |output: RunOutput| -> anyhow::Result<()> {
        for (_, tensor) in &output.tensors {
            finite &= all_finite(tensor)?;
        }
        last = output.tensors;
        Ok(())
    };
    for index in 0..args.warmup {
        keep(run(index)?)?;
    }
    reset_peak_rss();
    let (mut times, mut stages) = (Vec::new(), Vec::new());
    let counted_from = work::multiply_adds();
    for index in args.warmup..args.warmup + args.reps {
        let started = Instant::now();
        let output = run(index)?;
        times.push(started.elapsed().as_secs_f64());
        stages.extend(output.stages);
        keep(output)?;
    }
    let run_peak_mib = peak_rss_mib();
    let counted = work::multiply_adds().since(counted_from);
    let reps = args.reps.max(1) as u64;
    let macs = MultiplyAdds {
        f32: counted.f32 / reps,
        bf16: counted.bf16 / reps,
    };
    let dump = inputs
        .into_iter()
        .chain(last)
        .map(|(k, t)| (k.to_string(), t))
        .collect();
    Ok(Runs {
        times,
        stages,
        finite,
        run_peak_mib,
        macs,
        dump,
    })
}

fn all_finite(t: &Tensor) -> candle_core::Result<bool> {
    let sum = t
        .abs()?
        .sum_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    Ok(sum.is_finite())
}

/// Writes a figure's inputs and outputs to `<dir>/<model>-<component>-<size>-b<batch>.safetensors`.
fn write_dump(
    dir: &Path,
    spec: &FigureSpec,
    tensors: &HashMap<String, Tensor>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!(
        "{}-{}-{}-b{}.safetensors",
        name_of(spec.model),
        name_of(spec.component),
        spec.size,
        spec.batch
    ));
    candle_core::safetensors::save(tensors, &path)
        .with_context(|| format!("writing {}", path.display()))
}
