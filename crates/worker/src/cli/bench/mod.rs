//! The `bench` command: time full-size model architectures on this machine.
//!
//! The models are built from the public configs of SD 1.5, SD-Turbo (SD 2.1
//! shapes) and SDXL (`bench-configs/`) with deterministic random weights, or
//! loaded from a diffusers folder (`--weights`, as written by `--save-weights`);
//! either way through an sd-core [`sd_core::model::ModelSource`]
//! ([`source`]). The `image` figure times the production pipeline, the one
//! jobs run; the others time one component ([`measure`]). Each figure (model ×
//! component × size × batch) runs in its own child process by default
//! ([`child`]), so its peak resident memory ([`memory`]) is its own; [`report`]
//! prints them.

mod args;
mod child;
mod load;
mod machine;
mod measure;
mod memory;
mod random_weights;
mod report;
mod source;
mod workloads;

#[cfg(test)]
mod tests;

use std::time::Instant;

use anyhow::Context;
use candle_core::Device;
use sd_core::model::WeightVariant;

pub use args::{BenchArgs, BenchComponent, BenchModel, FigureSpec};
pub use load::PROMPT;
pub use report::Figure;

use crate::config::Backend;
use load::Loaded;
use memory::{peak_rss_mib, reset_peak_rss};

/// Runs the command on the binary's `backend`.
pub fn run(args: BenchArgs, backend: Backend) -> anyhow::Result<()> {
    args.check()?;
    if let Some(threads) = args.threads {
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    if let Some(dir) = &args.save_weights {
        let source = source::RandomSource::new(args.single_model()?, args.seed);
        return random_weights::save_weights(source, dir);
    }
    if args.in_process {
        if !args.default_allocator {
            sd_core::layers::tune_allocator();
        }
        let device = backend.open_device(args.device)?;
        let peaks = (!args.json)
            .then(|| print_machine(&args, backend))
            .transpose()?;
        return report::print(&run_in_process(&args, &device)?, args.json, peaks.as_ref());
    }
    let peaks = (!args.json)
        .then(|| print_machine(&args, backend))
        .transpose()?;
    let mut figures = Vec::new();
    for figure in args.figures() {
        let measured = child::run_child(&args, &figure)?;
        if args.json {
            report::print(&measured, true, None)?;
        }
        figures.extend(measured);
    }
    if !args.json {
        report::print(&figures, false, peaks.as_ref())?;
    }
    Ok(())
}

/// Measures the machine's peaks and prints the header lines (CPU, caches,
/// threads, kernel, roofline) before any figure.
fn print_machine(args: &BenchArgs, backend: Backend) -> anyhow::Result<machine::Peaks> {
    let precision = args.precision.resolve(backend)?;
    let peaks = machine::measure_peaks();
    print!("{}", machine::header(precision, &peaks));
    Ok(peaks)
}

/// Measures every figure `args` select in this process, on `device`: each
/// model's component is loaded once for all its sizes and batches.
pub fn run_in_process(args: &BenchArgs, device: &Device) -> anyhow::Result<Vec<Figure>> {
    args.check()?;
    let options = args
        .precision
        .resolve(Backend::of(device))?
        .load_options(WeightVariant::Full);
    let specs = args.figures();
    let mut figures = Vec::new();
    for &model in &args.models {
        for &component in &args.components {
            reset_peak_rss();
            let started = Instant::now();
            let source = source::open(args, model)?;
            let mut loaded = Loaded::load(source.clone(), component, args, options, device)
                .with_context(|| format!("loading {}", source.name()))?;
            let load_s = started.elapsed().as_secs_f64();
            let load_peak_mib = peak_rss_mib();
            for spec in specs
                .iter()
                .filter(|s| s.model == model && s.component == component)
            {
                figures.push(Figure {
                    load_s,
                    load_peak_mib,
                    ..loaded.measure(args, spec, device)?
                });
            }
        }
    }
    Ok(figures)
}
