//! Parity with diffusers for the tiny autoencoder and the tiled VAE.
//!
//! References come from `tools/fixtures/make_vae_extras.py` (`fixtures/vae-extras/`):
//!
//! ```python
//! taesd = AutoencoderTiny.from_pretrained("fixtures/vae-extras/tiny-taesd")
//! refs["taesd.decoded"] = taesd.decode(latents).sample
//! refs["taesd.encoded"] = taesd.encode(image).latents
//! pipe = StableDiffusionPipeline.from_pretrained("fixtures/tiny-sd15", vae=taesd)
//! refs["taesd.pipeline.image"] = pipe(..., output_type="pt").images
//! kl = AutoencoderKL.from_pretrained("fixtures/tiny-sd15/vae"); kl.enable_tiling()
//! kl.tile_sample_min_size = 32; kl.tile_latent_min_size = 4
//! refs["tiled.decoded"] = kl.decode(latents).sample
//! dist = kl.encode(image).latent_dist  # tiled.mean, tiled.logvar
//! ```

mod common;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Tensor};
use common::{assert_close, fixtures, max_abs_diff};
use sd_core::model::{load_tiny_vae, WeightVariant};
use sd_core::pipeline::{GenerateParams, StableDiffusion, VaeDecoder};
use sd_core::prompt::PromptSyntax;
use sd_core::vae::{AutoencoderKL, TilingMode, VaeConfig, VaeTiling};
use sd_core::{Error, Interrupt, Param};
use serde::Deserialize;

fn extras() -> PathBuf {
    fixtures().join("vae-extras")
}

fn references() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(extras().join("references.safetensors"), &Device::Cpu)
        .expect("vae-extras references")
}

fn tiny() -> sd_core::vae::AutoencoderTiny {
    load_tiny_vae(
        &extras().join("tiny-taesd"),
        WeightVariant::Full,
        &Device::Cpu,
    )
    .expect("tiny autoencoder")
}

fn kl_vae() -> AutoencoderKL {
    let dir = fixtures().join("tiny-sd15/vae");
    let cfg = VaeConfig::from_file(&dir.join("config.json")).expect("vae config");
    let weights = dir.join("diffusion_pytorch_model.safetensors");
    // SAFETY: the fixture file is not modified while mapped.
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu)
    }
    .expect("vae weights");
    AutoencoderKL::new(vb, &cfg).expect("vae model")
}

/// The tile size the references forced: 32 pixels, 4 latents.
fn small_tiles() -> VaeTiling {
    VaeTiling {
        sample_tile: 32,
        overlap_factor: 0.25,
    }
}

#[test]
fn tiny_decode_matches_diffusers() {
    let refs = references();
    let decoded = tiny()
        .decode(&refs["taesd.latents"], Interrupt::NEVER)
        .expect("decode");
    assert_close("taesd.decoded", &decoded, &refs["taesd.decoded"]);
}

#[test]
fn tiny_encode_matches_diffusers() {
    let refs = references();
    let encoded = tiny()
        .encode(&refs["taesd.image"], Interrupt::NEVER)
        .expect("encode");
    assert_close("taesd.encoded", &encoded, &refs["taesd.encoded"]);
}

#[test]
fn tiny_autoencoder_errors_name_the_file_and_shape() {
    let vae = tiny();
    let wrong = Tensor::zeros((1, 3, 8, 8), DType::F32, &Device::Cpu).unwrap();
    let err = vae.decode(&wrong, Interrupt::NEVER).unwrap_err();
    assert!(err.to_string().contains("[B, 4, h, w]"), "{err}");
    let odd = Tensor::zeros((1, 3, 60, 64), DType::F32, &Device::Cpu).unwrap();
    assert!(vae.encode(&odd, Interrupt::NEVER).is_err());
    // The full VAE's folder is not a tiny autoencoder.
    let err = load_tiny_vae(
        &fixtures().join("tiny-sd15/vae"),
        WeightVariant::Full,
        &Device::Cpu,
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("config.json") && message.contains("AutoencoderKL"),
        "{message}"
    );
}

#[test]
fn tiled_decode_matches_diffusers() {
    let refs = references();
    let vae = kl_vae();
    let latents = &refs["tiled.latents"];
    let tiled = vae
        .decode_tiled(latents, &small_tiles(), Interrupt::NEVER)
        .expect("tiled decode");
    assert_close("tiled.decoded", &tiled, &refs["tiled.decoded"]);
    // Tiling really changed the result: the seams blend, they do not vanish.
    let whole = vae.decode(latents).expect("decode");
    assert!(max_abs_diff(&whole, &tiled) > 1e-2);
}

#[test]
fn tiled_encode_matches_diffusers() {
    let refs = references();
    let dist = kl_vae()
        .encode_tiled(&refs["tiled.image"], &small_tiles(), Interrupt::NEVER)
        .expect("tiled encode");
    assert_close("tiled.mean", &dist.mean, &refs["tiled.mean"]);
    assert_close("tiled.logvar", &dist.logvar, &refs["tiled.logvar"]);
}

#[test]
fn inputs_within_one_tile_are_not_tiled() {
    let refs = references();
    let vae = kl_vae();
    let latents = refs["tiled.latents"].narrow(2, 0, 4).unwrap();
    let latents = latents.narrow(3, 0, 4).unwrap();
    let tiled = vae
        .decode_tiled(&latents, &small_tiles(), Interrupt::NEVER)
        .unwrap();
    let whole = vae.decode(&latents).unwrap();
    assert_eq!(max_abs_diff(&tiled, &whole), 0.0);
}

#[test]
fn a_raised_interrupt_stops_between_tiles() {
    let refs = references();
    let vae = kl_vae();
    // Raised after a few checks: inside the tile loop, not before it.
    let checks = AtomicUsize::new(0);
    let raised = || checks.fetch_add(1, Ordering::Relaxed) > 40;
    let err = vae
        .decode_tiled(
            &refs["tiled.latents"],
            &small_tiles(),
            Interrupt::new(&raised),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    assert!(checks.load(Ordering::Relaxed) > 40);
}

#[derive(Debug, Deserialize)]
struct PipelineRun {
    prompt: String,
    steps: usize,
    guidance_scale: f64,
    width: usize,
    height: usize,
    seed: u64,
}

fn pipeline_params(decoder: VaeDecoder) -> GenerateParams {
    let text = std::fs::read_to_string(extras().join("taesd.json")).unwrap();
    let run: PipelineRun = serde_json::from_str(&text).unwrap();
    GenerateParams {
        prompt: run.prompt,
        negative_prompt: None,
        prompt_syntax: PromptSyntax::Plain,
        clip_skip: 0,
        steps: run.steps,
        guidance_scale: run.guidance_scale,
        width: run.width,
        height: run.height,
        seed: run.seed,
        scheduler: None,
        image: None,
        decoder,
    }
}

fn pipeline() -> StableDiffusion {
    StableDiffusion::load(&fixtures().join("tiny-sd15"), &Device::Cpu).expect("tiny-sd15")
}

/// The pipeline with the tiny decoder gives the image diffusers' pipeline
/// gives with `vae=AutoencoderTiny`.
#[test]
fn pipeline_with_the_tiny_decoder_matches_diffusers() {
    let refs = references();
    let mut model = pipeline();
    let params = pipeline_params(VaeDecoder::Tiny);
    let err = model
        .generate(
            &params,
            Interrupt::NEVER,
            &mut |_| ControlFlow::Continue(()),
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::Param(e) if e.param == Param::Decoder),
        "{err}"
    );
    model.set_tiny_vae(Some(tiny())).unwrap();
    assert!(model.profile().tiny_decoder);
    let tiny_image = model
        .generate(
            &params,
            Interrupt::NEVER,
            &mut |_| ControlFlow::Continue(()),
        )
        .unwrap();
    let full_image = model
        .generate(
            &pipeline_params(VaeDecoder::Full),
            Interrupt::NEVER,
            &mut |_| ControlFlow::Continue(()),
        )
        .unwrap();
    assert_ne!(tiny_image.rgb, full_image.rgb);
    let want = &refs["taesd.pipeline.image"];
    let got: Vec<f32> = tiny_image.rgb.iter().map(|&v| v as f32 / 255.0).collect();
    let got = Tensor::from_vec(got, (params.height, params.width, 3), &Device::Cpu)
        .unwrap()
        .permute((2, 0, 1))
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    // 8-bit rounding: half a step, plus the float error.
    let err = max_abs_diff(&got, want);
    assert!(
        err <= 0.5 / 255.0 + 1e-3,
        "tiny-decoder image max |Δ| {err}"
    );
}

/// With tiling forced on and small tiles, the pipeline's decode is diffusers'
/// tiled decode; with tiling off it is the whole decode.
#[test]
fn pipeline_tiling_modes() {
    let mut model = pipeline();
    model.set_tile_geometry(small_tiles());
    let mut image_with = |mode| {
        model.set_vae_tiling(mode);
        model
            .generate(
                &pipeline_params(VaeDecoder::Full),
                Interrupt::NEVER,
                &mut |_| ControlFlow::Continue(()),
            )
            .unwrap()
            .rgb
    };
    let whole = image_with(TilingMode::Off);
    let tiled = image_with(TilingMode::On);
    assert_ne!(whole, tiled);
    assert_eq!(
        image_with(TilingMode::Auto {
            budget_bytes: u64::MAX
        }),
        whole
    );
    assert_eq!(image_with(TilingMode::Auto { budget_bytes: 0 }), tiled);
    let mut model = pipeline();
    assert!(model.set_tiny_vae(Some(tiny())).is_ok());
    assert!(model.set_tiny_vae(None).is_ok());
    assert!(!model.profile().tiny_decoder);
}
