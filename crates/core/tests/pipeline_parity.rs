//! Whole-pipeline parity with diffusers on the tiny random pipelines in `fixtures/`.
//!
//! Each `fixtures/traces/<model>/cases.json` lists generations that
//! `tools/fixtures/make_fixtures.py` ran with diffusers' `StableDiffusionPipeline`
//! (CPU generator, float32); `<case>.safetensors` holds its embeddings, final
//! latents and image. We run the same settings on `fixtures/<model>` and compare
//! within the tolerances the model-core issue sets.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use sd_contract::SchedulerKind;
use sd_core::model_files::WeightVariant;
use sd_core::pipeline::{GenerateParams, StableDiffusion};
use sd_core::schedulers::SchedulerConfig;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    /// The folder under `fixtures/` to load; defaults to the traces folder's name.
    model: Option<String>,
    /// A scheduler config replacing the folder's (the Turbo cases).
    scheduler_config: Option<serde_json::Value>,
    prompt: String,
    negative_prompt: Option<String>,
    steps: usize,
    guidance_scale: f64,
    width: usize,
    height: usize,
    seed: u64,
    scheduler: Option<String>,
    #[serde(default)]
    init_latents: bool,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn read_cases(dir: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(dir.join("cases.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let list = value.get("cases").cloned().unwrap_or(value);
    serde_json::from_value(list).unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    max_abs(&(a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap()).unwrap())
}

/// Runs every case of one traces folder against diffusers' references.
fn check_traces(traces_dir: &str, variant: WeightVariant) {
    let traces = fixtures().join("traces").join(traces_dir);
    let device = Device::Cpu;
    let mut models: HashMap<String, StableDiffusion> = HashMap::new();
    let mut failures = Vec::new();
    for case in read_cases(&traces) {
        let model_dir = case.model.clone().unwrap_or_else(|| traces_dir.to_string());
        let model = models.entry(model_dir.clone()).or_insert_with(|| {
            StableDiffusion::load_with(&fixtures().join(&model_dir), &device, variant)
                .unwrap_or_else(|e| panic!("loading {model_dir}: {e}"))
        });
        if let Some(config) = &case.scheduler_config {
            let config = SchedulerConfig::from_value(config.clone()).unwrap();
            model.set_scheduler_config(config).unwrap();
        }
        let reference: HashMap<String, Tensor> = candle_core::safetensors::load(
            traces.join(format!("{}.safetensors", case.name)),
            &device,
        )
        .unwrap();
        let init_latents = case.init_latents.then(|| {
            let mut file = candle_core::safetensors::load(
                traces.join(format!("{}.init.safetensors", case.name)),
                &device,
            )
            .unwrap();
            file.remove("latents").unwrap()
        });
        let params = GenerateParams {
            prompt: case.prompt.clone(),
            negative_prompt: case.negative_prompt.clone(),
            steps: case.steps,
            guidance_scale: case.guidance_scale,
            width: case.width,
            height: case.height,
            seed: case.seed,
            scheduler: case
                .scheduler
                .as_deref()
                .map(|s| s.parse::<SchedulerKind>().unwrap()),
            init_latents,
        };
        let image = model
            .generate(&params, &mut |_| ControlFlow::Continue(()))
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        // Without guidance the pipeline skips the negative prompt; encode it the
        // same way to compare with the reference.
        let trace = image.trace;
        let (negative, negative_pooled) = match trace.negative_prompt_embeds {
            Some(hidden) => (hidden, trace.negative_pooled_prompt_embeds),
            None => {
                let prompt = model.encode_prompt(&case.prompt).unwrap();
                let negative = model
                    .encode_negative(case.negative_prompt.as_deref(), &prompt)
                    .unwrap();
                (negative.hidden, negative.pooled)
            }
        };
        let latents_tolerance = 1e-3 * max_abs(&reference["latents_final"]);
        let mut checks = vec![
            ("prompt_embeds", Some(trace.prompt_embeds), 1e-3),
            ("negative_prompt_embeds", Some(negative), 1e-3),
            (
                "latents_final",
                Some(trace.latents_final),
                latents_tolerance,
            ),
            ("image", Some(trace.image), 5e-3),
        ];
        if reference.contains_key("pooled_prompt_embeds") {
            checks.extend([
                ("pooled_prompt_embeds", trace.pooled_prompt_embeds, 1e-3),
                ("negative_pooled_prompt_embeds", negative_pooled, 1e-3),
                ("add_time_ids", trace.add_time_ids, 0.0),
            ]);
        }
        for (name, ours, tolerance) in checks {
            let Some(ours) = ours else {
                failures.push(format!("{}: {name} missing from our trace", case.name));
                continue;
            };
            let diff = max_abs_diff(&ours, &reference[name]);
            println!(
                "{traces_dir}/{}: {name} max|Δ| = {diff:.3e} (tolerance {tolerance:.1e})",
                case.name
            );
            if diff > tolerance {
                failures.push(format!(
                    "{}: {name} {diff:.3e} > {tolerance:.1e}",
                    case.name
                ));
            }
        }
        assert_eq!(image.rgb.len(), case.width * case.height * 3);
    }
    assert!(
        failures.is_empty(),
        "parity failures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn tiny_sd15_matches_diffusers() {
    check_traces("tiny-sd15", WeightVariant::Full);
}

#[test]
fn tiny_sd15_fp16_weights_match_diffusers() {
    check_traces("tiny-sd15-fp16", WeightVariant::Fp16);
}

#[test]
fn tiny_sd2_v_prediction_matches_diffusers() {
    check_traces("tiny-sd2", WeightVariant::Full);
}

#[test]
fn tiny_sdxl_matches_diffusers() {
    check_traces("tiny-sdxl", WeightVariant::Full);
}

#[test]
fn tiny_sd_turbo_matches_diffusers() {
    check_traces("tiny-sd-turbo", WeightVariant::Full);
}

#[test]
fn tiny_sdxl_turbo_matches_diffusers() {
    check_traces("tiny-sdxl-turbo", WeightVariant::Full);
}
