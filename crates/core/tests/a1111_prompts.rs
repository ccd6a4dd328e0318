//! A1111-syntax prompts against the Python reference of A1111's algorithm
//! (`tools/fixtures/a1111_prompts.py`) on the tiny SD 1.5 text encoder (with
//! a random final layer norm, see the script) and the tiny SDXL pipeline's
//! two: the parsed segments, and the chunked, weighted embeddings of each
//! prompt and its negative prompt, padded to the same number of chunks.

mod common;

use candle_core::{Device, Tensor};
use common::{assert_close, fixtures, max_abs_diff};
use sd_core::model::{DiffusersFolder, LoadOptions, WeightVariant};
use sd_core::pipeline::StableDiffusion;
use sd_core::prompt::a1111::{parse, Segment};
use sd_core::prompt::{PromptSyntax, TextEncoders};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    prompt: String,
    negative_prompt: String,
    /// `[text, weight]`, the weight `null` for BREAK.
    segments: Vec<(String, Option<f64>)>,
    negative_segments: Vec<(String, Option<f64>)>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(fixtures().join("a1111/cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn as_reference(segments: &[Segment]) -> Vec<(String, Option<f64>)> {
    segments
        .iter()
        .map(|segment| match segment {
            Segment::Text { text, weight } => (text.clone(), Some(*weight)),
            Segment::Break => ("BREAK".to_string(), None),
        })
        .collect()
}

/// Equal texts, and weights within rounding (the JSON reader's last digit).
fn assert_same_segments(got: &[Segment], want: &[(String, Option<f64>)], text: &str) {
    let got = as_reference(got);
    assert_eq!(got.len(), want.len(), "{text}: {got:?} vs {want:?}");
    for ((got_text, got_weight), (want_text, want_weight)) in got.iter().zip(want) {
        assert_eq!(got_text, want_text, "{text}");
        match (got_weight, want_weight) {
            (Some(a), Some(b)) => assert!((a - b).abs() < 1e-12, "{text}: {a} vs {b}"),
            (a, b) => assert_eq!(a, b, "{text}"),
        }
    }
}

#[test]
fn the_parser_agrees_with_the_reference() {
    for case in cases() {
        assert_same_segments(&parse(&case.prompt), &case.segments, &case.prompt);
        assert_same_segments(
            &parse(&case.negative_prompt),
            &case.negative_segments,
            &case.negative_prompt,
        );
    }
}

/// Checks the encoders of `folder` against `fixtures/a1111/<name>.safetensors`.
fn check_model(folder: &str, name: &str, dual: bool) {
    let device = Device::Cpu;
    let source = DiffusersFolder::open(&fixtures().join(folder), WeightVariant::Full).unwrap();
    let mut encoders = TextEncoders::load(&source, dual, LoadOptions::default(), &device).unwrap();
    let empty = encoders.encode("", PromptSyntax::A1111).unwrap();
    let reference = candle_core::safetensors::load(
        fixtures().join(format!("a1111/{name}.safetensors")),
        &device,
    )
    .unwrap();
    let get = |key: String| -> &Tensor {
        reference
            .get(&key)
            .unwrap_or_else(|| panic!("{name}: no reference {key}"))
    };
    for (i, case) in cases().iter().enumerate() {
        let prompt = encoders.encode(&case.prompt, PromptSyntax::A1111).unwrap();
        let negative = encoders
            .encode(&case.negative_prompt, PromptSyntax::A1111)
            .unwrap();
        let len = prompt.len().max(negative.len());
        let prompt = prompt.padded_to(len, &empty).unwrap();
        let negative = negative.padded_to(len, &empty).unwrap();
        assert_close(
            &format!("{name} case {i} prompt"),
            &prompt.hidden,
            get(format!("{i}.prompt")),
        );
        assert_close(
            &format!("{name} case {i} negative"),
            &negative.hidden,
            get(format!("{i}.negative")),
        );
        if let Some(pooled) = &prompt.pooled {
            assert_close(
                &format!("{name} case {i} pooled"),
                pooled,
                get(format!("{i}.pooled")),
            );
            assert_close(
                &format!("{name} case {i} negative pooled"),
                negative.pooled.as_ref().unwrap(),
                get(format!("{i}.negative_pooled")),
            );
        }
    }
}

#[test]
fn sd15_embeddings_match_the_reference() {
    check_model("a1111/tiny-sd15-text", "tiny-sd15", false);
}

#[test]
fn sdxl_embeddings_match_the_reference() {
    check_model("tiny-sdxl", "tiny-sdxl", true);
}

/// The pipeline pads the shorter of prompt and negative prompt the same way.
#[test]
fn the_pipeline_pads_the_shorter_prompt_with_empty_chunks() {
    let mut model = StableDiffusion::load(&fixtures().join("tiny-sd15"), &Device::Cpu).unwrap();
    let long = ["castle"; 100].join(" ");
    let prompt = model.encode_prompt(&long, PromptSyntax::A1111).unwrap();
    let len = prompt.len();
    assert!(len > 77 && len.is_multiple_of(77), "{len}");
    let (negative, prompt) = model
        .encode_negative(Some("blurry"), prompt, PromptSyntax::A1111)
        .unwrap();
    assert_eq!((prompt.len(), negative.len()), (len, len));
    let (prompt, negative) = model
        .encode_negative(Some(&long), negative, PromptSyntax::A1111)
        .unwrap();
    assert_eq!((prompt.len(), negative.len()), (len, len));
    let short = model.encode_prompt("a cat", PromptSyntax::A1111).unwrap();
    let (negative, prompt) = model
        .encode_negative(None, short, PromptSyntax::A1111)
        .unwrap();
    assert_eq!((prompt.len(), negative.len()), (77, 77));
}

/// A prompt without emphasis and within one window is encoded exactly as in
/// diffusers' plain syntax.
#[test]
fn a_plain_prompt_reads_the_same_in_both_syntaxes() {
    let mut model = StableDiffusion::load(&fixtures().join("tiny-sdxl"), &Device::Cpu).unwrap();
    let text = "a photo of a cat, highly detailed";
    let a1111 = model.encode_prompt(text, PromptSyntax::A1111).unwrap();
    let plain = model.encode_prompt(text, PromptSyntax::Plain).unwrap();
    assert_eq!(max_abs_diff(&a1111.hidden, &plain.hidden), 0.0);
}
