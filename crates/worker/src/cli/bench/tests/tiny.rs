//! The benchmark on tiny random models: every figure through the random
//! source, and `--save-weights` loading back as the same pipeline.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;
use sd_core::model::{
    Component, DiffusersFolder, LoadOptions, ModelSource, SharedSource, WeightVariant,
};
use sd_core::pipeline::{GenerateParams, StableDiffusion, VaeDecoder};
use sd_core::tokenizer::ClipTokenizer;
use sd_core::Interrupt;

use super::parse_line;
use crate::cli::bench::load::Loaded;
use crate::cli::bench::random_weights::save_weights;
use crate::cli::bench::source::RandomSource;
use crate::cli::bench::BenchModel;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// A tiny random model on the configs of `fixtures/<fixture>`, its text
/// encoders widened to the bundled CLIP vocabulary.
fn tiny_random(fixture: &str, model: BenchModel) -> RandomSource {
    let dir = fixtures().join(fixture);
    let mut configs = Vec::new();
    for folder in ["unet", "vae", "text_encoder", "text_encoder_2", "scheduler"] {
        let file = match folder {
            "scheduler" => "scheduler_config.json",
            _ => "config.json",
        };
        let Ok(text) = std::fs::read_to_string(dir.join(folder).join(file)) else {
            continue;
        };
        let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
        if folder.starts_with("text_encoder") {
            config["vocab_size"] = 49408.into();
            config["bos_token_id"] = 49406.into();
            config["eos_token_id"] = 49407.into();
            config["pad_token_id"] = 49407.into();
        }
        configs.push((folder, config.to_string()));
    }
    RandomSource::with_configs(model, 7, configs)
}

/// A fresh scratch folder.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sd-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn every_figure_runs_on_a_tiny_random_model() {
    let dump = scratch("dump");
    let args = parse_line(&format!(
        "--components unet,vae-decode,vae-encode,tiny-decode,text,image --sizes 64 \
         --batches 2 --reps 2 --warmup 1 --steps 2 --dump {} --tiny-vae {}/../../fixtures/vae-extras/tiny-taesd",
        dump.display(),
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let source: SharedSource = Arc::new(tiny_random("tiny-sd15", BenchModel::Sd15));
    let device = Device::Cpu;
    for spec in args.figures() {
        let mut loaded = Loaded::load(
            source.clone(),
            spec.component,
            &args,
            LoadOptions::default(),
            &device,
        )
        .unwrap();
        let figure = loaded.measure(&args, &spec, &device).unwrap();
        assert!(figure.finite, "{spec:?}");
        assert!(
            figure.min_s > 0.0 && figure.min_s <= figure.median_s,
            "{spec:?}"
        );
        assert!(figure.median_s <= figure.max_s, "{spec:?}");
    }
    let names: Vec<String> = std::fs::read_dir(&dump)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 6, "{names:?}");
    let image =
        candle_core::safetensors::load(dump.join("sd15-image-64-b1.safetensors"), &device).unwrap();
    assert_eq!(image["image"].dims(), [1, 3, 64, 64]);
    let text =
        candle_core::safetensors::load(dump.join("sd15-text-0-b1.safetensors"), &device).unwrap();
    let ids: Vec<i64> = text["input_ids"].flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(&ids[..3], [49406, 320, 8853], "{ids:?}");
    std::fs::remove_dir_all(dump).unwrap();
}

#[test]
fn saved_weights_load_as_the_same_pipeline() {
    let params = GenerateParams {
        prompt: "a cat".into(),
        negative_prompt: None,
        prompt_syntax: sd_core::prompt::PromptSyntax::Plain,
        clip_skip: 0,
        steps: 2,
        guidance_scale: 5.0,
        width: 64,
        height: 64,
        seed: 3,
        scheduler: None,
        image: None,
        decoder: VaeDecoder::Full,
    };
    let rgb = |source: SharedSource| {
        let mut pipeline =
            StableDiffusion::load_from(source, &Device::Cpu, LoadOptions::default()).unwrap();
        let image = pipeline.generate(
            &params,
            Interrupt::NEVER,
            &mut |_| ControlFlow::Continue(()),
        );
        image.unwrap().rgb
    };
    for (fixture, model) in [
        ("tiny-sd15", BenchModel::Sd15),
        ("tiny-sdxl", BenchModel::Sdxl),
    ] {
        let dir = scratch(fixture);
        save_weights(tiny_random(fixture, model), &dir).unwrap();
        let folder = DiffusersFolder::open(&dir, WeightVariant::Full).unwrap();
        let dual = model == BenchModel::Sdxl;
        assert_eq!(folder.has(Component::TextEncoder2), dual);
        assert!(folder.force_zeros_for_empty_prompt());
        if dual {
            let second = ClipTokenizer::from_dir(&dir.join("tokenizer_2")).unwrap();
            assert_eq!((second.pad_id(), second.max_length()), (0, 77));
        }
        assert_eq!(
            rgb(Arc::new(tiny_random(fixture, model))),
            rgb(Arc::new(folder)),
            "{fixture}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
