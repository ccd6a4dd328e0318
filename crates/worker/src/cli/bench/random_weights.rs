//! Deterministic random weights, and `--save-weights`, which writes them with
//! their configs and tokenizers as a diffusers folder (for diffusers to load
//! the same model, see `tools/bench/compare_diffusers.py`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use sd_core::model::files::{MODEL_INDEX, SCHEDULER_CONFIG};
use sd_core::model::{Component, LoadOptions, ModelSource, WeightVariant};
use sd_core::prompt::TextEncoders;
use sd_core::tokenizer::{BUNDLED_MERGES_TXT, BUNDLED_VOCAB_JSON};
use serde_json::json;

use super::load::load_unet;
use super::source::RandomSource;

/// Every tensor the random backends of one source handed out, by component folder.
#[derive(Debug, Clone, Default)]
pub struct Recorder(Arc<Mutex<HashMap<&'static str, HashMap<String, Tensor>>>>);

impl Recorder {
    fn keep(&self, folder: &'static str, name: &str, tensor: &Tensor) {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        kept.entry(folder)
            .or_default()
            .insert(name.to_string(), tensor.clone());
    }

    /// Takes the tensors kept for `folder`.
    pub fn take(&self, folder: &str) -> HashMap<String, Tensor> {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        kept.remove(folder).unwrap_or_default()
    }
}

/// A var builder backend that draws every requested tensor from a counter-based
/// generator keyed by the seed and the tensor's name, so the same name always
/// gets the same values. Matrices are uniform in ±1/√fan_in (PyTorch's default
/// scale), norm weights 1 ± 0.1, biases ± 0.02.
pub struct RandomBackend {
    seed: u64,
    component: Component,
    recorder: Option<Recorder>,
}

impl RandomBackend {
    /// The backend of one component; `recorder` keeps every tensor handed out.
    pub fn new(seed: u64, component: Component, recorder: Option<Recorder>) -> Self {
        Self {
            seed,
            component,
            recorder,
        }
    }
}

impl SimpleBackend for RandomBackend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _hints: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let dims = shape.dims();
        let (offset, bound) = match dims.len() {
            0 | 1 if name.ends_with("weight") => (1.0, 0.1),
            0 | 1 => (0.0, 0.02),
            _ => {
                let fan_in = shape.elem_count() / dims[0].max(1);
                (0.0, 1.0 / (fan_in.max(1) as f32).sqrt())
            }
        };
        let values = random_values(self.seed, name, shape.elem_count(), offset, bound);
        let tensor = Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?;
        if let Some(recorder) = &self.recorder {
            recorder.keep(self.component.folder(), name, &tensor);
        }
        Ok(tensor)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _device: &Device,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights need a shape, none given for {name}")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        // The modern diffusers / transformers names exist; legacy VAE attention
        // names and unprefixed CLIP names do not.
        let legacy = ["query", "key", "value", "proj_attn"];
        let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
        let leaf = stem.rsplit('.').next().unwrap_or(stem);
        if legacy.contains(&leaf) {
            return false;
        }
        if name == "text_projection.weight" {
            return self.component == Component::TextEncoder2;
        }
        !name.starts_with("embeddings.")
    }
}

/// `n` values `offset + bound · u`, `u` uniform in [-1, 1), from splitmix64 over
/// the index, keyed by the seed and an FNV-1a hash of `name`.
fn random_values(seed: u64, name: &str, n: usize, offset: f32, bound: f32) -> Vec<f32> {
    let mut key = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for byte in name.bytes() {
        key ^= u64::from(byte);
        key = key.wrapping_mul(0x0100_0000_01b3);
    }
    let mut out = Vec::with_capacity(n);
    let scale = bound * 2.0 / (1u64 << 24) as f32;
    let mut state = key;
    while out.len() < n {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        for half in [z as u32, (z >> 32) as u32] {
            if out.len() < n {
                let u = (half >> 8) as f32 * scale - bound;
                out.push(offset + u);
            }
        }
    }
    out
}

/// Writes `source`'s model as a diffusers folder in `dir`: `model_index.json`,
/// each component's config and f32 weights (every tensor the pipeline's
/// loaders ask for), the tokenizers and the scheduler config.
pub fn save_weights(source: RandomSource, dir: &Path) -> anyhow::Result<()> {
    let source = source.recording();
    let (options, device) = (LoadOptions::default(), Device::Cpu);
    write_file(dir, MODEL_INDEX, &model_index(&source)?)?;
    write_file(dir, SCHEDULER_CONFIG, &source.scheduler_config()?.text)?;
    load_unet(&source, options, &device)?;
    save_component(&source, Component::Unet, dir)?;
    sd_core::model::load_vae(&source, options, &device)?;
    save_component(&source, Component::Vae, dir)?;
    let dual = source.has(Component::TextEncoder2);
    TextEncoders::load(&source, dual, options, &device)?;
    for encoder in [Component::TextEncoder, Component::TextEncoder2] {
        if source.has(encoder) {
            save_component(&source, encoder, dir)?;
            save_tokenizer(&source, encoder, dir)?;
        }
    }
    Ok(())
}

/// Writes the config and the recorded weights of one component.
fn save_component(source: &RandomSource, component: Component, dir: &Path) -> anyhow::Result<()> {
    write_file(
        dir,
        &component.config_file(),
        &source.config(component)?.text,
    )?;
    let tensors = source.take_recorded(component);
    let path = dir.join(&component.weight_candidates(WeightVariant::Full)[0]);
    candle_core::safetensors::save(&tensors, &path)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {} ({} tensors)", path.display(), tensors.len());
    Ok(())
}

/// Writes the bundled vocabulary with the encoder's special tokens, as
/// transformers' `CLIPTokenizer` reads them.
fn save_tokenizer(source: &RandomSource, encoder: Component, dir: &Path) -> anyhow::Result<()> {
    let folder = encoder.tokenizer_folder().context("not a text encoder")?;
    let end = "<|endoftext|>";
    let config = json!({
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": end,
        "unk_token": end,
        "pad_token": source.pad_token(encoder),
    });
    write_file(dir, &format!("{folder}/vocab.json"), BUNDLED_VOCAB_JSON)?;
    write_file(dir, &format!("{folder}/merges.txt"), BUNDLED_MERGES_TXT)?;
    write_file(
        dir,
        &format!("{folder}/tokenizer_config.json"),
        &config.to_string(),
    )
}

/// The `model_index.json` of diffusers' SD or SDXL pipeline for `source`.
fn model_index(source: &RandomSource) -> anyhow::Result<String> {
    let scheduler: serde_json::Value = source.scheduler_config()?.parse()?;
    let mut index = json!({
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.30.0",
        "feature_extractor": [null, null],
        "image_encoder": [null, null],
        "safety_checker": [null, null],
        "requires_safety_checker": false,
        "scheduler": ["diffusers", scheduler["_class_name"]],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    });
    if source.has(Component::TextEncoder2) {
        let fields = index.as_object_mut().context("an object")?;
        fields.remove("safety_checker");
        fields.remove("requires_safety_checker");
        fields.extend([
            ("_class_name".into(), json!("StableDiffusionXLPipeline")),
            ("force_zeros_for_empty_prompt".into(), json!(true)),
            (
                "text_encoder_2".into(),
                json!(["transformers", "CLIPTextModelWithProjection"]),
            ),
            (
                "tokenizer_2".into(),
                json!(["transformers", "CLIPTokenizer"]),
            ),
        ]);
    }
    Ok(serde_json::to_string_pretty(&index)?)
}

/// Writes `text` to `dir/name`, creating its folder.
fn write_file(dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_keyed_by_seed_and_name_and_bounded() {
        let a = random_values(1, "w", 1001, 0.0, 0.5);
        assert_eq!(a.len(), 1001);
        assert_eq!(a, random_values(1, "w", 1001, 0.0, 0.5));
        assert_ne!(a, random_values(2, "w", 1001, 0.0, 0.5));
        assert_ne!(a, random_values(1, "v", 1001, 0.0, 0.5));
        assert!(a.iter().all(|v| (-0.5..0.5).contains(v)));
        let norm = random_values(1, "w", 100, 1.0, 0.1);
        assert!(norm.iter().all(|v| (0.9..1.1).contains(v)));
    }

    #[test]
    fn legacy_and_unprefixed_names_are_absent() {
        let backend = |component| RandomBackend::new(0, component, None);
        let vae = backend(Component::Vae);
        assert!(vae.contains_tensor("mid_block.attentions.0.to_q.weight"));
        assert!(!vae.contains_tensor("mid_block.attentions.0.query.weight"));
        assert!(!backend(Component::TextEncoder).contains_tensor("text_projection.weight"));
        assert!(backend(Component::TextEncoder2).contains_tensor("text_projection.weight"));
        assert!(
            !backend(Component::TextEncoder).contains_tensor("embeddings.token_embedding.weight")
        );
    }

    #[test]
    fn a_recorder_keeps_tensors_by_component() {
        let recorder = Recorder::default();
        let backend = RandomBackend::new(0, Component::Vae, Some(recorder.clone()));
        let init = candle_nn::Init::Const(0.0);
        backend
            .get((2, 2).into(), "a.weight", init, DType::F32, &Device::Cpu)
            .unwrap();
        assert!(recorder.take("unet").is_empty());
        assert_eq!(recorder.take("vae").len(), 1);
        assert!(recorder.take("vae").is_empty());
    }
}
