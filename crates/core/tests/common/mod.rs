//! Helpers shared by the integration tests: fixture paths, the component
//! references and tensor comparisons.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use std::ops::ControlFlow;

use candle_core::{DType, Device, Tensor};
use sd_core::pipeline::{DebugOptions, GenerateParams, GeneratedImage, StableDiffusion};
use sd_core::Interrupt;

/// The repository's `fixtures/` folder.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// `fixtures/tiny-sd15-components.safetensors`: diffusers' per-component references.
pub fn references() -> HashMap<String, Tensor> {
    let path = fixtures().join("tiny-sd15-components.safetensors");
    candle_core::safetensors::load(path, &Device::Cpu).expect("component references")
}

/// `max |t|`.
pub fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// `max |a - b|`, computed in `f32`; the shapes must match.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    max_abs(&(a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap()).unwrap())
}

/// Asserts `max |got - want| <= 1e-4 * max(1, max |want|)` and returns the error.
pub fn assert_close(name: &str, got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.dims(), want.dims(), "{name}: shape");
    let err = (got - want).unwrap().abs().unwrap().max_all().unwrap();
    let err = err.to_scalar::<f32>().unwrap();
    let scale = want
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let tol = 1e-4 * scale.max(1.0);
    eprintln!("{name}: max |Δ| = {err:e} (tolerance {tol:e})");
    assert!(err <= tol, "{name}: max |Δ| = {err} > {tol}");
    err
}

/// Runs `params` through the production loop with a trace (no given initial
/// latents), panicking with `label` on an error.
pub fn generate_traced(
    model: &mut StableDiffusion,
    params: &GenerateParams,
    label: &str,
) -> GeneratedImage {
    let debug = DebugOptions {
        init_latents: None,
        trace: true,
    };
    model
        .generate_with(params, &debug, Interrupt::NEVER, &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap_or_else(|e| panic!("{label}: {e}"))
}

/// Each `(name, ours, tolerance)` against `reference[name]`, printing every
/// difference; returns the ones beyond their tolerance.
pub fn failures_beyond(
    label: &str,
    checks: &[(&str, &Tensor, f32)],
    reference: &HashMap<String, Tensor>,
) -> Vec<String> {
    let mut failures = Vec::new();
    for &(name, ours, tolerance) in checks {
        let diff = max_abs_diff(ours, &reference[name]);
        println!("{label}: {name} max|Δ| = {diff:.3e} (tolerance {tolerance:.1e})");
        if diff > tolerance {
            failures.push(format!("{label}: {name} {diff:.3e} > {tolerance:.1e}"));
        }
    }
    failures
}
