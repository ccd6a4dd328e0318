//! Resolving Hugging Face repo ids through a cache folder laid out like the real one
//! (`models--owner--name/{refs/main, snapshots/<commit>/..., blobs/<hash>}`).
//! The hub itself cannot be reached from the test machines.

use std::path::{Path, PathBuf};

use sd_core::model::files::{ModelIndex, WeightVariant};
use sd_core::model::hub::{needed_files, resolve_model_with, HubOptions, Needed};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn tiny_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-sd15")
}

/// Every file of the tiny model, relative to its folder.
fn model_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out
}

/// A hub cache holding `files` of the tiny model as `repo`, blobs linked from the snapshot.
fn fake_cache(name: &str, repo: &str, files: &[String]) -> PathBuf {
    let cache = std::env::temp_dir().join(format!("sd-core-hub-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let repo_dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), COMMIT).unwrap();
    for (i, file) in files.iter().enumerate() {
        let blob = repo_dir.join("blobs").join(format!("blob{i:04}"));
        std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
        std::fs::copy(tiny_model().join(file), &blob).unwrap();
        let pointer = repo_dir.join("snapshots").join(COMMIT).join(file);
        std::fs::create_dir_all(pointer.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&blob, &pointer).unwrap();
    }
    cache
}

fn options(cache: PathBuf, offline: bool) -> HubOptions {
    HubOptions {
        cache_dir: cache,
        revision: "main".to_string(),
        variant: WeightVariant::Full,
        offline,
    }
}

#[test]
fn a_complete_cache_resolves_offline_to_its_snapshot() {
    let files = model_files(&tiny_model());
    let cache = fake_cache("complete", "someone/tiny-sd15", &files);
    let root = resolve_model_with("someone/tiny-sd15", &options(cache.clone(), true)).unwrap();
    assert_eq!(
        root,
        cache
            .join("models--someone--tiny-sd15/snapshots")
            .join(COMMIT)
    );
    assert!(root.join("unet/config.json").is_file());
    std::fs::remove_dir_all(cache).unwrap();
}

#[test]
fn an_incomplete_cache_offline_names_the_problem() {
    let files: Vec<String> = model_files(&tiny_model())
        .into_iter()
        .filter(|f| !f.starts_with("unet/diffusion_pytorch_model"))
        .collect();
    let cache = fake_cache("incomplete", "someone/tiny-sd15", &files);
    let err = resolve_model_with("someone/tiny-sd15", &options(cache.clone(), true)).unwrap_err();
    std::fs::remove_dir_all(cache).unwrap();
    let message = err.to_string();
    assert!(message.contains("HF_HUB_OFFLINE"), "{message}");
    assert!(
        message.contains("unet/diffusion_pytorch_model"),
        "{message}"
    );
}

#[test]
fn a_local_folder_is_used_as_it_is_and_a_missing_one_is_named() {
    let folder = tiny_model();
    let spec = folder.to_string_lossy().into_owned();
    assert_eq!(
        resolve_model_with(&spec, &options(PathBuf::from("/nonexistent"), true)).unwrap(),
        folder
    );
    let err = resolve_model_with(
        "./no/such/model",
        &options(PathBuf::from("/nonexistent"), true),
    )
    .unwrap_err();
    assert!(err.to_string().contains("no/such/model"), "{err}");
}

#[test]
fn only_needed_files_are_chosen_and_fp16_is_preferred_when_asked() {
    let index: ModelIndex = serde_json::from_str(
        r#"{"_class_name":"StableDiffusionPipeline","_diffusers_version":"0.30.0",
            "feature_extractor":["transformers","CLIPImageProcessor"],
            "safety_checker":["stable_diffusion","StableDiffusionSafetyChecker"],
            "scheduler":["diffusers","PNDMScheduler"],"text_encoder":["transformers","CLIPTextModel"],
            "tokenizer":["transformers","CLIPTokenizer"],"unet":["diffusers","UNet2DConditionModel"],
            "vae":["diffusers","AutoencoderKL"]}"#,
    )
    .unwrap();
    let repo = [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "text_encoder/model.fp16.safetensors",
        "text_encoder/pytorch_model.bin",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "tokenizer/tokenizer_config.json",
        "tokenizer/special_tokens_map.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.bin",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "safety_checker/model.safetensors",
        "v1-5-pruned.safetensors",
    ];
    let available = |name: &str| repo.contains(&name);
    let full = needed_files(&index, WeightVariant::Full, Needed::Everything, &available).unwrap();
    assert!(full.contains(&"unet/diffusion_pytorch_model.safetensors".to_string()));
    assert!(!full
        .iter()
        .any(|f| f.contains("safety_checker") || f.ends_with(".bin")));
    assert!(!full
        .iter()
        .any(|f| f.contains("pruned") || f.contains("fp16")));
    let half = needed_files(&index, WeightVariant::Fp16, Needed::Everything, &available).unwrap();
    assert!(half.contains(&"unet/diffusion_pytorch_model.fp16.safetensors".to_string()));
    assert!(half.contains(&"text_encoder/model.fp16.safetensors".to_string()));
    // The VAE has no fp16 file: the full-precision one is the fallback.
    assert!(half.contains(&"vae/diffusion_pytorch_model.safetensors".to_string()));
}

#[test]
fn hf_home_and_offline_come_from_the_environment() {
    let home = std::env::temp_dir().join(format!("sd-core-hf-home-{}", std::process::id()));
    std::env::set_var("HF_HOME", &home);
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let options = HubOptions::from_env(WeightVariant::Fp16);
    assert_eq!(options.cache_dir, home.join("hub"));
    assert!(options.offline);
    assert_eq!(options.variant, WeightVariant::Fp16);
    std::env::remove_var("HF_HUB_OFFLINE");
    std::env::remove_var("HF_HOME");
}

#[test]
fn an_unreachable_hub_is_an_error_not_a_hang() {
    let cache = std::env::temp_dir().join(format!("sd-core-hub-empty-{}", std::process::id()));
    std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
    let err = resolve_model_with("someone/not-cached", &options(cache.clone(), false)).unwrap_err();
    std::env::remove_var("HF_ENDPOINT");
    let _ = std::fs::remove_dir_all(cache);
    assert!(err.to_string().contains("someone/not-cached"), "{err}");
}
