//! Textual-inversion embeddings over HTTP and from `generate`, on tiny SD 1.5
//! with an `--embeddings-dir` of the fixtures' embeddings
//! (`tools/fixtures/make_embeddings.py`), an SDXL one, a pickle and a file
//! in no known layout: the listings, and a job naming embeddings in its
//! prompt and negative prompt against diffusers' image.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use clap::Parser;
use common::*;
use sd_contract::JobEvent;
use sd_worker::cli::generate::{self, GenerateArgs};
use sd_worker::config::Backend;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// A scratch embeddings folder: the SD 1.5 fixtures, the SDXL one, a
/// pickle and a safetensors file that is no embedding.
fn embeddings_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sd-worker-emb-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let emb = fixtures().join("embeddings");
    for (from, to) in [
        ("sd15/tinyone.safetensors", "tinyone.safetensors"),
        ("sd15/tinythree.safetensors", "tinythree.safetensors"),
        ("sdxl/tinyxl.safetensors", "tinyxl.safetensors"),
    ] {
        std::fs::copy(emb.join(from), dir.join(to)).unwrap();
    }
    std::fs::write(dir.join("old.pt"), b"not unpickled").unwrap();
    let one = Tensor::ones((1, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("a".to_string(), one.clone()), ("b".to_string(), one)]),
        dir.join("twokeys.safetensors"),
    )
    .unwrap();
    dir
}

/// The fixture case `name` of `fixtures/embeddings/cases.json`.
fn case(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("embeddings/cases.json")).unwrap();
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    cases.into_iter().find(|c| c["name"] == name).unwrap()
}

/// The largest channel difference between 8-bit RGB pixels and diffusers'
/// image of the reference `name`.
fn max_difference(rgb: &[u8], name: &str) -> u8 {
    let tensors = candle_core::safetensors::load(
        fixtures().join(format!("embeddings/{name}.safetensors")),
        &Device::Cpu,
    )
    .unwrap();
    let want = tensor_rgb8(&tensors["image"]);
    assert_eq!(rgb.len(), want.len());
    rgb.iter()
        .zip(want)
        .map(|(a, b)| a.abs_diff(b))
        .max()
        .unwrap()
}

#[test]
fn embeddings_are_listed_and_a_job_matches_diffusers() {
    let dir = embeddings_dir("worker");
    let model = fixtures().join("tiny-sd15");
    let worker = WorkerProcess::spawn(
        &[
            "--model",
            model.to_str().unwrap(),
            "--embeddings-dir",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    worker.wait_ready();

    let listed = get(&worker.url, "/v1/embeddings").value();
    let names: Vec<&str> = listed["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tinyone", "tinythree"], "{listed}");
    assert_eq!(listed["embeddings"][1]["vectors"], 3);
    assert_eq!(listed["embeddings"][1]["format"], "a1111");
    assert_eq!(listed["embeddings"][0]["format"], "diffusers");
    assert_eq!(listed["embeddings"][0]["widths"], serde_json::json!([32]));
    let skipped: Vec<(&str, &str)> = listed["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(skipped.len(), 3, "{listed}");
    assert!(
        skipped[0].0 == "old" && skipped[0].1.contains("pickle"),
        "{skipped:?}"
    );
    assert!(
        skipped[1].0 == "tinyxl" && skipped[1].1.contains("[32, 48]"),
        "{skipped:?}"
    );
    assert!(
        skipped[2].0 == "twokeys" && skipped[2].1.contains("found a, b"),
        "{skipped:?}"
    );
    assert!(
        !listed.to_string().contains(dir.to_str().unwrap()),
        "{listed}"
    );
    let info = get(&worker.url, "/v1/info").value();
    assert_eq!(
        info["embeddings"]["names"],
        serde_json::json!(["tinyone", "tinythree"])
    );
    let a1111 = get(&worker.url, "/sdapi/v1/embeddings").value();
    assert_eq!(a1111["loaded"]["tinythree"]["vectors"], 3);
    assert_eq!(a1111["loaded"]["tinythree"]["shape"], 32);
    assert!(a1111["skipped"]["old"].is_object(), "{a1111}");

    let case = case("sd15_embeddings");
    for syntax in ["plain", "a1111"] {
        let body = serde_json::json!({
            "operation": "image_generation",
            "prompt": case["prompt"],
            "negative_prompt": case["negative_prompt"],
            "prompt_syntax": syntax,
            "steps": case["steps"],
            "guidance_scale": case["guidance_scale"],
            "width": case["width"],
            "height": case["height"],
            "seed": case["seed"],
        });
        let created = submit(&worker.url, &body.to_string());
        let transcript = stream(&worker.url, &created.sse_url, &[]);
        let Some(JobEvent::Complete(result)) = transcript.events().pop() else {
            panic!("{transcript:?}")
        };
        let (_, _, rgb) = decode_png(&result.image);
        let worst = max_difference(&rgb, "sd15_embeddings");
        assert!(
            worst <= 2,
            "{syntax}: the job differs from diffusers by {worst}"
        );
        assert!(
            max_difference(&rgb, "sd15_embeddings.base") > 10,
            "{syntax}: the embeddings were ignored"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: GenerateArgs,
}

#[test]
fn generate_takes_an_embeddings_dir() {
    let case = case("sdxl_embeddings");
    let output = std::env::temp_dir().join(format!("sd-worker-emb-{}.png", std::process::id()));
    let model = fixtures().join("tiny-sdxl");
    let embeddings = fixtures().join("embeddings/sdxl");
    let line = [
        "sd-worker-cpu".to_string(),
        "--model".into(),
        model.display().to_string(),
        "--embeddings-dir".into(),
        embeddings.display().to_string(),
        "--prompt".into(),
        case["prompt"].as_str().unwrap().into(),
        "--negative-prompt".into(),
        case["negative_prompt"].as_str().unwrap().into(),
        "--steps".into(),
        case["steps"].to_string(),
        "--guidance-scale".into(),
        case["guidance_scale"].to_string(),
        "--width".into(),
        case["width"].to_string(),
        "--height".into(),
        case["height"].to_string(),
        "--seed".into(),
        case["seed"].to_string(),
        "--output".into(),
        output.display().to_string(),
    ];
    generate::run(Cli::try_parse_from(line).unwrap().args, Backend::Cpu).unwrap();
    let bytes = std::fs::read(&output).unwrap();
    std::fs::remove_file(&output).unwrap();
    use base64::Engine as _;
    let (_, _, rgb) = decode_png(&base64::engine::general_purpose::STANDARD.encode(bytes));
    let worst = max_difference(&rgb, "sdxl_embeddings");
    assert!(worst <= 2, "generate differs from diffusers by {worst}");
}
