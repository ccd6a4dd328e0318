//! Whole-pipeline parity with diffusers on the tiny random pipelines in `fixtures/`.
//!
//! Each `fixtures/traces/<folder>/cases.json` lists generations that
//! `tools/fixtures/make_fixtures.py` ran with diffusers' text-to-image,
//! image-to-image and inpainting pipelines (CPU generator, float32);
//! `<case>.safetensors` holds its embeddings, intermediates, final latents and
//! image. We run the same settings on `fixtures/<model>` and compare within the
//! tolerances the model-core issue sets.

mod common;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;

use candle_core::{Device, Tensor};
use common::{fixtures, max_abs, max_abs_diff};
use sd_contract::SchedulerKind;
use sd_core::image_input::DecodedImage;
use sd_core::model_files::WeightVariant;
use sd_core::pipeline::{GenerateParams, ImageInput, StableDiffusion};
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
    /// Image-to-image and inpainting: the input picture, next to `cases.json`.
    init_image: Option<String>,
    /// Inpainting: the mask picture.
    mask_image: Option<String>,
    strength: Option<f64>,
    /// UNet passes diffusers ran (image cases).
    steps_run: Option<usize>,
}

fn read_cases(dir: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(dir.join("cases.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let list = value.get("cases").cloned().unwrap_or(value);
    serde_json::from_value(list).unwrap()
}

fn read_picture(dir: &Path, name: &str) -> DecodedImage {
    let bytes = std::fs::read(dir.join(name)).unwrap();
    DecodedImage::decode(&bytes, "init_image", usize::MAX).unwrap()
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
            image: case.init_image.as_deref().map(|name| ImageInput {
                image: read_picture(&traces, name),
                mask: case.mask_image.as_deref().map(|m| read_picture(&traces, m)),
                strength: case.strength.expect("image cases give a strength"),
            }),
        };
        let mut progress = Vec::new();
        let mut last_latents = None;
        let image = model
            .generate(&params, &mut |p| {
                let predicted = p.predicted_original.map(|x0| x0.dims().to_vec());
                progress.push((p.step, p.total, predicted));
                last_latents = Some(p.latents.clone());
                ControlFlow::Continue(())
            })
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let total = progress.last().map_or(0, |p| p.1);
        assert!(progress.iter().all(|p| p.1 == total));
        assert_eq!(progress.len(), total, "{}: progress reports", case.name);
        // Every scheduler but PNDM hands its clean prediction to the step callback.
        let latent_dims = image.trace.latents_final.dims().to_vec();
        let expected = (image.scheduler != SchedulerKind::Pndm).then_some(latent_dims);
        assert!(
            progress.iter().all(|p| p.2 == expected),
            "{}: predicted x0 {:?}",
            case.name,
            progress.last()
        );
        let last_latents = last_latents.expect("at least one step");
        assert_eq!(
            max_abs(&(last_latents - &image.trace.latents_final).unwrap()),
            0.0,
            "{}: the last step's latents are the final ones",
            case.name
        );
        if let Some(steps_run) = case.steps_run {
            assert_eq!(total, steps_run, "{}: steps run", case.name);
        }
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
        if let Some(input) = trace.image_input {
            let latent_tolerance = |name: &str| 1e-3 * max_abs(&reference[name]);
            checks.extend([
                ("image_in", Some(input.image_in), 0.0),
                ("noise", Some(input.noise), 0.0),
                (
                    "latents_start",
                    Some(trace.latents_start),
                    latent_tolerance("latents_start"),
                ),
            ]);
            if reference.contains_key("image_latents") {
                let tolerance = latent_tolerance("image_latents");
                checks.push(("image_latents", input.image_latents, tolerance));
            }
            if reference.contains_key("mask") {
                let tolerance = latent_tolerance("masked_image_latents");
                checks.extend([
                    ("mask_image", input.mask_image, 0.0),
                    ("mask", input.mask, 0.0),
                    (
                        "masked_image_latents",
                        input.masked_image_latents,
                        tolerance,
                    ),
                ]);
            }
            let timesteps: Vec<f64> = reference["timesteps"].to_vec1().unwrap();
            if trace.timesteps != timesteps {
                failures.push(format!(
                    "{}: timesteps {:?}, diffusers ran {timesteps:?}",
                    case.name, trace.timesteps
                ));
            }
        }
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

#[test]
fn tiny_sd15_img2img_matches_diffusers() {
    check_traces("tiny-sd15-img2img", WeightVariant::Full);
}

#[test]
fn tiny_sd15_inpaint_9_and_4_channels_match_diffusers() {
    check_traces("tiny-sd15-inpaint", WeightVariant::Full);
}

#[test]
fn tiny_sdxl_img2img_and_inpaint_match_diffusers() {
    check_traces("tiny-sdxl-img2img", WeightVariant::Full);
}
