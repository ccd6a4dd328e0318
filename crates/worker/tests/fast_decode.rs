//! The tiny autoencoder through the HTTP API: `fast_decode` jobs on the built
//! binary with `--tiny-vae` give diffusers' image for a pipeline whose `vae`
//! is that `AutoencoderTiny` (`fixtures/vae-extras`, made by
//! `tools/fixtures/make_vae_extras.py`), live previews become its decodes, and
//! a worker without one refuses `fast_decode: true` naming the field.

mod common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use common::*;
use sd_contract::JobEvent;
use serde::Deserialize;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn tiny_vae() -> String {
    fixtures()
        .join("vae-extras/tiny-taesd")
        .to_string_lossy()
        .into_owned()
}

fn model() -> String {
    fixtures().join("tiny-sd15").to_string_lossy().into_owned()
}

/// The settings of diffusers' pipeline run with the tiny autoencoder.
#[derive(Debug, Deserialize)]
struct PipelineRun {
    prompt: String,
    steps: u32,
    guidance_scale: f64,
    width: u32,
    height: u32,
    seed: u64,
}

fn pipeline_run() -> PipelineRun {
    let text = std::fs::read_to_string(fixtures().join("vae-extras/taesd.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// diffusers' image with the tiny decoder, as 8-bit RGB.
fn reference_rgb() -> Vec<u8> {
    let tensors = candle_core::safetensors::load(
        fixtures().join("vae-extras/references.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    tensor_rgb8(&tensors["taesd.pipeline.image"])
}

/// Runs the reference settings with `extra` fields and returns the events.
fn run_job(url: &str, extra: &str) -> Vec<JobEvent> {
    let run = pipeline_run();
    let body = format!(
        r#"{{"operation":"image_generation","prompt":"{}","steps":{},"guidance_scale":{},
            "width":{},"height":{},"seed":{},"prompt_syntax":"plain"{extra}}}"#,
        run.prompt, run.steps, run.guidance_scale, run.width, run.height, run.seed
    );
    let created = submit(url, &body);
    stream(url, &created.sse_url, &[]).events()
}

fn final_image(events: &[JobEvent]) -> String {
    match events.last() {
        Some(JobEvent::Complete(result)) => result.image.clone(),
        other => panic!("no image: {other:?}"),
    }
}

#[test]
fn fast_decode_over_http_gives_diffusers_tiny_vae_image() {
    let model = model();
    let tiny = tiny_vae();
    let worker = WorkerProcess::spawn(&["--model", &model, "--tiny-vae", &tiny], &[]);
    worker.wait_ready();
    let fast = final_image(&run_job(&worker.url, r#","fast_decode":true"#));
    let (width, height, rgb) = decode_png(&fast);
    let run = pipeline_run();
    assert_eq!((width, height), (run.width, run.height));
    let worst = rgb
        .iter()
        .zip(reference_rgb())
        .map(|(a, b)| a.abs_diff(b))
        .max()
        .unwrap();
    assert!(
        worst <= 1,
        "fast decode differs from diffusers by {worst}/255"
    );
    let full = final_image(&run_job(&worker.url, r#","fast_decode":false"#));
    assert_ne!(
        decode_png(&full).2,
        rgb,
        "fast_decode: false uses the full VAE"
    );
    let default = final_image(&run_job(&worker.url, ""));
    assert_eq!(default, full, "the default decoder is the full VAE");
}

#[test]
fn the_tiny_decoder_as_the_workers_default() {
    let model = model();
    let tiny = tiny_vae();
    let worker = WorkerProcess::spawn(
        &[
            "--model",
            &model,
            "--tiny-vae",
            &tiny,
            "--vae-decoder",
            "tiny",
        ],
        &[],
    );
    worker.wait_ready();
    let default = final_image(&run_job(&worker.url, ""));
    let fast = final_image(&run_job(&worker.url, r#","fast_decode":true"#));
    assert_eq!(default, fast);
}

/// Previews on a worker with the tiny autoencoder are its decodes: the image
/// size, and unlike the latent projection's.
#[test]
fn previews_are_tiny_decodes_when_a_tiny_vae_is_loaded() {
    let model = model();
    let tiny = tiny_vae();
    let preview_frames = |args: &[&str]| {
        let worker = WorkerProcess::spawn(args, &[]);
        worker.wait_ready();
        let events = run_job(&worker.url, r#","preview":true,"scheduler":"euler""#);
        let sizes = previews(&events);
        let first = events
            .iter()
            .find_map(|e| match e {
                JobEvent::Progress {
                    preview: Some(p), ..
                } => Some(p.data_url.clone()),
                _ => None,
            })
            .expect("a preview");
        let b64 = first.strip_prefix("data:image/png;base64,").unwrap();
        (sizes, decode_png(b64).2, final_image(&events))
    };
    let (decoded_sizes, decoded, image) = preview_frames(&["--model", &model, "--tiny-vae", &tiny]);
    let (projected_sizes, projected, same_image) = preview_frames(&["--model", &model]);
    let run = pipeline_run();
    assert!(
        decoded_sizes
            .iter()
            .filter_map(|(_, size)| *size)
            .all(|size| size == (run.width, run.height)),
        "{decoded_sizes:?}"
    );
    assert!(projected_sizes.iter().any(|(_, size)| size.is_some()));
    assert_ne!(
        decoded, projected,
        "previews must come from the tiny decoder"
    );
    assert_eq!(image, same_image, "previews do not change the image");
}

#[test]
fn fast_decode_without_a_tiny_vae_is_a_400_naming_the_field() {
    let server = TestServer::ready(config());
    let resp = post_json(
        &server.url,
        "/v1/jobs",
        &generation(r#","fast_decode":true"#),
    );
    assert_eq!(resp.status, 400, "{}", resp.body);
    let (_, field) = resp.error();
    assert_eq!(field.as_deref(), Some("fast_decode"));
    let resp = post_json(
        &server.url,
        "/v1/jobs",
        &generation(r#","fast_decode":false"#),
    );
    assert_eq!(resp.status, 202, "{}", resp.body);
}

#[test]
fn a_tiny_default_decoder_needs_a_tiny_vae() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sd-worker-cpu"))
        .args(["--port", "0", "--model", &model(), "--vae-decoder", "tiny"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--tiny-vae"), "{stderr}");
}
