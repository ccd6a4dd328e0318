//! Textual-inversion parity with diffusers on the tiny pipelines.
//!
//! `tools/fixtures/make_embeddings.py` wrote `fixtures/embeddings/`: for tiny
//! SD 1.5 a one-vector embedding in diffusers' layout and a three-vector one
//! in AUTOMATIC1111's, for tiny SDXL a two-vector `clip_l`/`clip_g` pair, and
//! diffusers' embeddings, final latents and image after
//! `load_textual_inversion` with each file's stem as its token, named in the
//! prompt and in the negative prompt, and without the embeddings. Each case
//! changes the image by far more than the tolerance, so a loader that ignores
//! an embedding fails here.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use common::{failures_beyond, fixtures, generate_traced, max_abs, max_abs_diff};
use sd_core::embeddings::{EmbeddingSet, TextualInversion};
use sd_core::pipeline::{GenerateParams, GeneratedImage, StableDiffusion, VaeDecoder};
use sd_core::prompt::PromptSyntax;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    model: String,
    embeddings: String,
    prompt: String,
    negative_prompt: String,
    steps: usize,
    guidance_scale: f64,
    width: usize,
    height: usize,
    seed: u64,
}

fn embeddings_dir() -> PathBuf {
    fixtures().join("embeddings")
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(embeddings_dir().join("cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn reference(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        embeddings_dir().join(format!("{name}.safetensors")),
        &Device::Cpu,
    )
    .unwrap()
}

fn generate(
    model: &mut StableDiffusion,
    case: &Case,
    syntax: PromptSyntax,
    prompt: &str,
) -> GeneratedImage {
    let params = GenerateParams {
        prompt: prompt.to_string(),
        negative_prompt: Some(case.negative_prompt.clone()),
        prompt_syntax: syntax,
        clip_skip: 0,
        steps: case.steps,
        guidance_scale: case.guidance_scale,
        width: case.width,
        height: case.height,
        seed: case.seed,
        scheduler: None,
        decoder: VaeDecoder::Full,
        image: None,
    };
    generate_traced(model, &params, &case.name)
}

/// The case's embeddings, latents and image against a reference, within the
/// f32 pipelines' tolerances; returns the failures.
fn compare(
    label: &str,
    image: &GeneratedImage,
    reference: &HashMap<String, Tensor>,
) -> Vec<String> {
    let trace = image.trace.as_ref().expect("a trace was asked for");
    let latents_tolerance = 1e-3 * max_abs(&reference["latents_final"]);
    let mut checks = vec![
        ("prompt_embeds", &trace.prompt_embeds, 1e-3),
        (
            "negative_prompt_embeds",
            trace.negative_prompt_embeds.as_ref().unwrap(),
            1e-3,
        ),
        ("latents_final", &trace.latents_final, latents_tolerance),
        ("image", &trace.image, 5e-3),
    ];
    if let Some(pooled) = &trace.pooled_prompt_embeds {
        checks.push(("pooled_prompt_embeds", pooled, 1e-3));
        checks.push((
            "negative_pooled_prompt_embeds",
            trace.negative_pooled_prompt_embeds.as_ref().unwrap(),
            1e-3,
        ));
    }
    failures_beyond(label, &checks, reference)
}

/// Every case in both prompt syntaxes (its prompts have no brackets, so they
/// read alike) with the embeddings, then without them: diffusers' outputs
/// each time.
#[test]
fn embeddings_in_prompt_and_negative_prompt_match_diffusers() {
    let mut failures = Vec::new();
    for case in cases() {
        let with = reference(&case.name);
        let without = reference(&format!("{}.base", case.name));
        let change = max_abs_diff(&with["image"], &without["image"]);
        assert!(
            change > 0.05,
            "{}: the embeddings change the image by only {change}",
            case.name
        );
        let mut model = StableDiffusion::load(&fixtures().join(&case.model), &Device::Cpu).unwrap();
        failures.extend(compare(
            &format!("{} without embeddings", case.name),
            &generate(&mut model, &case, PromptSyntax::Plain, &case.prompt),
            &without,
        ));
        let (set, skipped) =
            EmbeddingSet::read_dir(&embeddings_dir().join(&case.embeddings)).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        let unfit = model.set_embeddings(&set).unwrap();
        assert!(unfit.is_empty(), "{unfit:?}");
        for syntax in [PromptSyntax::Plain, PromptSyntax::A1111] {
            failures.extend(compare(
                &format!("{} ({syntax})", case.name),
                &generate(&mut model, &case, syntax, &case.prompt),
                &with,
            ));
        }
        model.set_embeddings(&EmbeddingSet::default()).unwrap();
        failures.extend(compare(
            &format!("{} with the embeddings taken away", case.name),
            &generate(&mut model, &case, PromptSyntax::Plain, &case.prompt),
            &without,
        ));
    }
    assert!(
        failures.is_empty(),
        "parity failures:\n{}",
        failures.join("\n")
    );
}

/// An embedding inside A1111 emphasis takes the emphasis: `(name:1.0)` is the
/// name alone, another weight changes the embeddings.
#[test]
fn emphasis_weights_an_embedding() {
    let case = &cases()[0];
    let mut model = StableDiffusion::load(&fixtures().join(&case.model), &Device::Cpu).unwrap();
    let (set, _) = EmbeddingSet::read_dir(&embeddings_dir().join(&case.embeddings)).unwrap();
    model.set_embeddings(&set).unwrap();
    let plain = model
        .encode_prompt("a cat tinyone", PromptSyntax::A1111)
        .unwrap();
    let same = model
        .encode_prompt("a cat (tinyone:1.0)", PromptSyntax::A1111)
        .unwrap();
    let heavier = model
        .encode_prompt("a cat (tinyone:1.5)", PromptSyntax::A1111)
        .unwrap();
    assert_eq!(max_abs_diff(&plain.hidden, &same.hidden), 0.0);
    assert!(max_abs_diff(&plain.hidden, &heavier.hidden) > 1e-2);
}

/// An SD 1.x embedding on SDXL (and the other way round) is skipped with a
/// reason naming the widths, and its name then reads as plain text.
#[test]
fn embeddings_of_another_family_are_skipped() {
    let sd15 = embeddings_dir().join("sd15");
    let sdxl = embeddings_dir().join("sdxl");
    let set = EmbeddingSet::new([
        TextualInversion::read(&sd15.join("tinyone.safetensors")).unwrap(),
        TextualInversion::read(&sdxl.join("tinyxl.safetensors")).unwrap(),
    ]);
    let mut model = StableDiffusion::load(&fixtures().join("tiny-sdxl"), &Device::Cpu).unwrap();
    let skipped = model.set_embeddings(&set).unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].name, "tinyone");
    assert!(skipped[0].reason.contains("[32]"), "{}", skipped[0].reason);

    let mut model = StableDiffusion::load(&fixtures().join("tiny-sd15"), &Device::Cpu).unwrap();
    let skipped = model.set_embeddings(&set).unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].name, "tinyxl");
}
