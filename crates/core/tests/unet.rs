//! UNet parity with diffusers on the tiny SD-1.5-shaped fixture.
//!
//! References come from `tools/fixtures/make_fixtures.py`:
//! `unet.out = pipe.unet(unet.sample, unet.timestep, encoder_hidden_states=unet.encoder_hidden_states).sample`
//! (and the same with `unet_frac.timestep`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use sd_core::unet::{UNet2DConditionModel, UNetConfig};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn references() -> HashMap<String, Tensor> {
    let path = fixtures().join("tiny-sd15-components.safetensors");
    candle_core::safetensors::load(path, &Device::Cpu).expect("component references")
}

fn load_unet(dir: &Path) -> UNet2DConditionModel {
    let cfg = UNetConfig::from_file(&dir.join("config.json")).expect("unet config");
    let weights = dir.join("diffusion_pytorch_model.safetensors");
    // SAFETY: the fixture file is not modified while mapped.
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu)
    }
    .expect("unet weights");
    UNet2DConditionModel::new(vb, &cfg).expect("unet model")
}

/// Asserts `max |got - want| <= 1e-4 * max(1, max |want|)` and returns the error.
fn assert_close(name: &str, got: &Tensor, want: &Tensor) -> f32 {
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

fn timestep(t: &Tensor) -> f64 {
    t.to_vec1::<f32>().unwrap()[0] as f64
}

#[test]
fn tiny_sd15_matches_diffusers() {
    let refs = references();
    let unet = load_unet(&fixtures().join("tiny-sd15/unet"));
    let sample = &refs["unet.sample"];
    let ehs = &refs["unet.encoder_hidden_states"];
    for case in ["unet", "unet_frac"] {
        let t = timestep(&refs[&format!("{case}.timestep")]);
        let out = unet.forward(sample, t, ehs).expect("forward");
        assert_close(case, &out, &refs[&format!("{case}.out")]);
    }
}

#[test]
fn bad_shapes_are_errors() {
    let refs = references();
    let unet = load_unet(&fixtures().join("tiny-sd15/unet"));
    let ehs = &refs["unet.encoder_hidden_states"];
    let dev = Device::Cpu;
    let wrong_channels = Tensor::zeros((2, 3, 8, 12), DType::F32, &dev).unwrap();
    let err = unet.forward(&wrong_channels, 1.0, ehs).unwrap_err();
    assert!(err.to_string().contains("sample"), "{err}");
    let rank3 = Tensor::zeros((4, 8, 12), DType::F32, &dev).unwrap();
    assert!(unet.forward(&rank3, 1.0, ehs).is_err());
    let sample = &refs["unet.sample"];
    let wrong_batch = ehs.narrow(0, 0, 1).unwrap();
    let err = unet.forward(sample, 1.0, &wrong_batch).unwrap_err();
    assert!(err.to_string().contains("encoder_hidden_states"), "{err}");
    let wrong_width = Tensor::zeros((2, 77, 16), DType::F32, &dev).unwrap();
    assert!(unet.forward(sample, 1.0, &wrong_width).is_err());
}

#[test]
fn missing_tensor_names_it() {
    let dir = fixtures().join("tiny-sd15/unet");
    let cfg = UNetConfig::from_file(&dir.join("config.json")).unwrap();
    let vb = candle_nn::VarBuilder::from_tensors(HashMap::new(), DType::F32, &Device::Cpu);
    let err = UNet2DConditionModel::new(vb, &cfg).unwrap_err();
    assert!(err.to_string().contains("conv_in.weight"), "{err}");
}
