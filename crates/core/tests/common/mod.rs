//! Helpers shared by the integration tests: fixture paths, the component
//! references and tensor comparisons.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

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
