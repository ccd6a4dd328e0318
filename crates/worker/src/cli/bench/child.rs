//! One child process per figure, so that each figure's peak resident memory
//! is its own: the child is this executable, running `bench --in-process
//! --json` on exactly that figure.

use std::ffi::OsString;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use super::args::{name_of, BenchArgs, FigureSpec};
use super::report::Figure;

/// The arguments (after the executable) that measure `figure` alone, with the
/// parent's other settings, in process, as JSON.
pub fn child_args(args: &BenchArgs, figure: &FigureSpec) -> Vec<OsString> {
    let mut line: Vec<OsString> = vec!["bench".into(), "--in-process".into(), "--json".into()];
    let mut flag = |name: &str, value: String| line.extend([name.into(), value.into()]);
    flag("--models", name_of(figure.model));
    flag("--components", name_of(figure.component));
    // Text figures have no size; any valid one selects them.
    flag("--sizes", figure.size.max(8).to_string());
    flag("--batches", figure.batch.to_string());
    flag("--reps", args.reps.to_string());
    flag("--warmup", args.warmup.to_string());
    flag("--seed", args.seed.to_string());
    flag("--images", args.images.to_string());
    if let Some(per_pass) = args.images_per_pass {
        flag("--images-per-pass", per_pass.to_string());
    }
    flag("--device", args.device.to_string());
    if let Some(dtype) = args.precision.dtype {
        flag("--dtype", dtype.as_str().to_string());
    }
    flag("--compute-dtype", name_of(args.precision.compute_dtype));
    if let Some(steps) = args.steps {
        flag("--steps", steps.to_string());
    }
    if let Some(guidance) = args.guidance_scale {
        flag("--guidance-scale", guidance.to_string());
    }
    flag("--vae-decoder", name_of(args.decoding.vae_decoder));
    flag("--vae-tiling", name_of(args.decoding.vae_tiling));
    if let Some(tiny) = &args.decoding.tiny_vae {
        flag("--tiny-vae", tiny.clone());
    }
    if let Some(bytes) = args.decoding.max_memory {
        flag("--max-memory", bytes.to_string());
    }
    if args.default_allocator {
        line.push("--default-allocator".into());
    }
    for (name, path) in [("--weights", &args.weights), ("--dump", &args.dump)] {
        if let Some(path) = path {
            line.extend([name.into(), path.clone().into_os_string()]);
        }
    }
    line
}

/// Measures `figure` in a child process of this executable (its stderr
/// passed through) and returns the figures it printed.
pub fn run_child(args: &BenchArgs, figure: &FigureSpec) -> anyhow::Result<Vec<Figure>> {
    let exe = std::env::current_exe().context("locating the benchmark executable")?;
    let output = Command::new(exe)
        .args(child_args(args, figure))
        .stderr(Stdio::inherit())
        .output()
        .context("starting a benchmark child process")?;
    if !output.status.success() {
        bail!(
            "benchmark of {} {} at {} px, batch {} failed ({})",
            name_of(figure.model),
            name_of(figure.component),
            figure.size,
            figure.batch,
            output.status
        );
    }
    parse_figures(&String::from_utf8_lossy(&output.stdout))
}

/// The figures of a child's output: its lines that are JSON objects.
fn parse_figures(stdout: &str) -> anyhow::Result<Vec<Figure>> {
    stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).context("reading a benchmark child's output"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::bench::args::{BenchComponent, BenchModel};
    use crate::cli::bench::tests::{parse, parse_line};
    use crate::config::Dtype;

    #[test]
    fn a_child_measures_exactly_its_figure_with_the_parents_settings() {
        let parent = parse_line(
            "--models sd15,sdxl --components unet,text,image --sizes 64,128 \
             --batches 1,2 --reps 5 --warmup 0 --seed 9 --steps 2 --guidance-scale \
             3.5 --dtype bf16 --weights /models/x --dump /tmp/d --default-allocator \
             --threads 4 --vae-tiling on --vae-decoder tiny --tiny-vae /models/taesd \
             --max-memory 2G",
        )
        .unwrap();
        for figure in parent.figures() {
            let line = child_args(&parent, &figure);
            assert_eq!(line[0], "bench");
            let child = parse(&line[1..]).unwrap();
            assert_eq!(child.figures(), [figure]);
            assert!(child.in_process && child.json && child.default_allocator);
            assert_eq!((child.reps, child.warmup, child.seed), (5, 0, 9));
            assert_eq!((child.steps, child.guidance_scale), (Some(2), Some(3.5)));
            assert_eq!(child.precision.dtype, Some(Dtype::Bf16));
            assert_eq!(
                child.precision.compute_dtype,
                parent.precision.compute_dtype
            );
            assert_eq!(child.weights, parent.weights);
            assert_eq!(child.dump, parent.dump);
            assert_eq!(child.decoding, parent.decoding);
            assert_eq!(
                child.threads, None,
                "the parent sets the threads for its children"
            );
        }
    }

    #[test]
    fn a_text_figure_survives_the_round_trip() {
        let parent = parse(&["--components", "text"]).unwrap();
        let figure = parent.figures()[0];
        assert_eq!((figure.component, figure.size), (BenchComponent::Text, 0));
        let child = parse(&child_args(&parent, &figure)[1..]).unwrap();
        assert_eq!(child.figures(), [figure]);
        assert_eq!(child.models, [BenchModel::Sd15]);
    }

    #[test]
    fn only_json_lines_are_figures() {
        let figure = r#"{"model":"sd15","component":"unet","size":64,"batch":2,"reps":1,
            "median_s":0.5,"min_s":0.5,"max_s":0.5,"load_s":1.0,"load_peak_mib":10.0,
            "run_peak_mib":12.0,"finite":true}"#
            .replace('\n', "");
        let figures = parse_figures(&format!("loading\n{figure}\n")).unwrap();
        assert_eq!(figures.len(), 1);
        assert_eq!(figures[0].batch, 2);
        assert!(parse_figures("{not json").is_err());
    }
}
