//! Argument parsing, the checks on its values, and the figures a command line selects.

use super::{parse, parse_line};
use crate::cli::bench::args::{name_of, BenchComponent, BenchModel};
use crate::config::Dtype;

#[test]
fn defaults_time_every_component_of_sd15() {
    let args = parse::<&str>(&[]).unwrap();
    assert_eq!(args.models, [BenchModel::Sd15]);
    assert_eq!(args.components.len(), 5);
    assert_eq!(
        (args.sizes.as_slice(), args.batches.as_slice()),
        (&[256, 512][..], &[1, 2][..])
    );
    assert_eq!((args.reps, args.warmup, args.seed), (3, 1, 0));
    assert_eq!(args.precision.dtype, None);
    assert!(!args.in_process && !args.json && args.weights.is_none());
    args.check().unwrap();
    assert_eq!(args.image_settings(BenchModel::Sd15), (4, 7.5));
    assert_eq!(args.image_settings(BenchModel::SdTurbo), (1, 0.0));
}

#[test]
fn lists_are_comma_separated() {
    let args = parse_line(
        "--models sd-turbo,sdxl --components vae-decode,image --sizes 64,128 \
         --batches 2 --steps 3 --guidance-scale 2 --dtype bf16",
    )
    .unwrap();
    assert_eq!(args.models, [BenchModel::SdTurbo, BenchModel::Sdxl]);
    assert_eq!(
        args.components,
        [BenchComponent::VaeDecode, BenchComponent::Image]
    );
    assert_eq!(args.sizes, [64, 128]);
    assert_eq!(args.image_settings(BenchModel::SdTurbo), (3, 2.0));
    assert_eq!(args.precision.dtype, Some(Dtype::Bf16));
}

#[test]
fn parsing_rejects_unknown_values() {
    for line in [
        &["--models", "sd3"][..],
        &["--components", "unet,clip"],
        &["--sizes", "256,big"],
        &["--reps", "-1"],
        &["--dtype", "f8"],
        &["--frobnicate"],
    ] {
        assert!(parse(line).is_err(), "{line:?} parsed");
    }
}

#[test]
fn check_rejects_values_no_figure_can_run_with() {
    let rejected = [
        (&["--sizes", "250"][..], "--sizes"),
        (&["--sizes", "0"], "--sizes"),
        (&["--reps", "0"], "--reps"),
        (&["--batches", "1,0"], "--batches"),
        (&["--threads", "0"], "--threads"),
        (&["--steps", "0"], "--steps"),
        (&["--models", "sd15,sdxl", "--weights", "w"], "--weights"),
        (
            &["--models", "sd15,sdxl", "--save-weights", "w"],
            "--weights",
        ),
    ];
    for (line, flag) in rejected {
        let error = parse(line).unwrap().check().unwrap_err().to_string();
        assert!(error.starts_with(flag), "{line:?}: {error}");
    }
}

#[test]
fn figures_cross_models_components_sizes_and_unet_batches() {
    let args = parse_line(
        "--models sd15,sdxl --components unet,text,image --sizes 64,128 \
         --batches 1,2",
    )
    .unwrap();
    let figures = args.figures();
    let sd15: Vec<_> = figures
        .iter()
        .filter(|f| f.model == BenchModel::Sd15)
        .map(|f| (name_of(f.component), f.size, f.batch))
        .collect();
    let expected = [
        ("unet", 64, 1),
        ("unet", 64, 2),
        ("unet", 128, 1),
        ("unet", 128, 2),
        ("text", 0, 1),
        ("image", 64, 1),
        ("image", 128, 1),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(c, s, b)| (c.to_string(), *s, *b))
        .collect();
    assert_eq!(sd15, expected);
    assert_eq!(figures.len(), 2 * expected.len());
    assert_eq!(figures[expected.len()].model, BenchModel::Sdxl);
}
