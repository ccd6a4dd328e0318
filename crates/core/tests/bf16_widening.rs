//! The path bf16 weights take without the bf16 kernel (CPUs without
//! AVX512-BF16, or switched off): the weights widened to f32 per call, every
//! product in f32. Its own test binary, because the switch is process-wide.

mod common;

use std::path::Path;

use candle_core::{DType, Device};
use common::{fixtures, max_abs, max_abs_diff, references};
use sd_core::layers::bf16::{self, Bf16Kernel};
use sd_core::unet::{UNet2DConditionModel, UNetConfig};

fn load_unet_as(dir: &Path, dtype: DType) -> UNet2DConditionModel {
    let cfg = UNetConfig::from_file(&dir.join("config.json")).expect("unet config");
    let weights = dir.join("diffusion_pytorch_model.safetensors");
    // SAFETY: the fixture file is not modified while mapped.
    let vb =
        unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&[weights], dtype, &Device::Cpu) }
            .expect("unet weights");
    UNet2DConditionModel::new(vb, &cfg).expect("unet model")
}

/// Switched off, bf16 weights compute in f32: the tiny SD1.5 UNet stays as
/// close to diffusers' f32 output as the rounding of the weights alone allows
/// (the bound of `unet.rs` before the bf16 kernel existed), and closer than
/// the bf16 kernel gets where the CPU has one.
#[test]
fn switched_off_bf16_weights_compute_in_f32() {
    let refs = references();
    let run = || {
        let unet = load_unet_as(&fixtures().join("tiny-sd15/unet"), DType::BF16);
        let out = unet
            .forward(
                &refs["unet.sample"],
                801.0,
                &refs["unet.encoder_hidden_states"],
            )
            .expect("forward");
        assert_eq!(out.dtype(), DType::F32);
        let want = &refs["unet.out"];
        max_abs_diff(&out, want) / max_abs(want).max(1.0)
    };
    let kernel_error = (bf16::kernel() == Bf16Kernel::Avx512Bf16).then(run);
    assert_eq!(bf16::set_enabled(false), Bf16Kernel::WidenToF32);
    let widened_error = run();
    eprintln!(
        "bf16 weights widened: max |Δ| = {widened_error:e} relative; bf16 kernel: {kernel_error:?}"
    );
    assert!(widened_error < 1.5e-2, "{widened_error}");
    if let Some(kernel_error) = kernel_error {
        assert!(
            widened_error < kernel_error,
            "{widened_error} vs {kernel_error}"
        );
    } else {
        println!("bf16 kernel comparison skipped: this CPU has no AVX512-BF16");
    }
}
