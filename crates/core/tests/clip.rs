//! The CLIP text encoder against transformers' `CLIPTextModel` on the tiny SD 1.5 fixture.
//!
//! fixtures/tiny-sd15-components.safetensors was written by
//! tools/fixtures/make_fixtures.py (group `components`):
//!
//! ```python
//! ids = pipe.tokenizer(["a photo of a tiny robot, 3d render", ""], padding="max_length",
//!                      max_length=77, truncation=True, return_tensors="pt").input_ids
//! out = pipe.text_encoder(ids[:1], output_hidden_states=True)
//! # clip.input_ids = ids[:1]; clip.last_hidden_state; clip.pooled = out.pooler_output;
//! # clip.hidden_states.{i} = out.hidden_states[i]
//! ```

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::{fixtures, max_abs_diff, references};
use sd_core::clip::{ClipTextConfig, ClipTextModel};
use sd_core::tokenizer::ClipTokenizer;

const TOLERANCE: f32 = 1e-4;
const PROMPT: &str = "a photo of a tiny robot, 3d render";

fn text_encoder_dir() -> PathBuf {
    fixtures().join("tiny-sd15/text_encoder")
}

fn config() -> ClipTextConfig {
    ClipTextConfig::from_file(&text_encoder_dir().join("config.json")).unwrap()
}

/// The fixture's weights as a name → tensor map, for tests that edit them.
fn weights() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(text_encoder_dir().join("model.safetensors"), &Device::Cpu)
        .unwrap()
}

#[test]
fn text_encoder_matches_transformers() {
    let cfg = config();
    let path = text_encoder_dir().join("model.safetensors");
    let vb =
        unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, &Device::Cpu) }.unwrap();
    let model = ClipTextModel::new(vb, &cfg).unwrap();
    assert!(!model.has_text_projection());

    let refs = references();
    let out = model.forward(&refs["clip.input_ids"]).unwrap();

    let err = max_abs_diff(&out.last_hidden_state, &refs["clip.last_hidden_state"]);
    println!("last_hidden_state max |Δ| = {err:e}");
    assert!(err <= TOLERANCE, "last_hidden_state: {err}");
    assert_eq!(out.hidden_states.len(), cfg.num_hidden_layers + 1);
    for (i, hidden) in out.hidden_states.iter().enumerate() {
        let err = max_abs_diff(hidden, &refs[&format!("clip.hidden_states.{i}")]);
        println!("hidden_states.{i} max |Δ| = {err:e}");
        assert!(err <= TOLERANCE, "hidden_states.{i}: {err}");
    }
    let err = max_abs_diff(&out.pooled, &refs["clip.pooled"]);
    println!("pooled max |Δ| = {err:e}");
    assert!(err <= TOLERANCE, "pooled: {err}");
    assert!(out.text_embeds.is_none());

    // u32 ids, as the tokenizer produces them, give the same result.
    let ids = refs["clip.input_ids"].to_dtype(DType::U32).unwrap();
    let again = model.forward(&ids).unwrap();
    assert_eq!(
        max_abs_diff(&again.last_hidden_state, &out.last_hidden_state),
        0.0
    );
}

#[test]
fn tokenizer_reproduces_the_fixture_ids() {
    let tokenizer = ClipTokenizer::from_dir(&fixtures().join("tiny-sd15/tokenizer")).unwrap();
    let expected = references()["clip.input_ids"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec2::<u32>()
        .unwrap();
    assert_eq!(tokenizer.encode(PROMPT), expected[0]);
}

/// The f16 file's values stored in f16 compute (in f32) what they compute widened at load.
#[test]
fn fp16_weights_stored_as_f32_or_f16_give_the_same_output() {
    let cfg =
        ClipTextConfig::from_file(&fixtures().join("tiny-sd15-fp16/text_encoder/config.json"))
            .unwrap();
    let path = fixtures().join("tiny-sd15-fp16/text_encoder/model.fp16.safetensors");
    let refs = references();
    for dtype in [DType::F32, DType::F16] {
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[&path], dtype, &Device::Cpu) }.unwrap();
        let model = ClipTextModel::new(vb, &cfg).unwrap();
        let out = model.forward(&refs["clip.input_ids"]).unwrap();
        let last = out.last_hidden_state.to_dtype(DType::F32).unwrap();
        let err = max_abs_diff(&last, &refs["clip.last_hidden_state"]);
        println!("{dtype:?} last_hidden_state max |Δ| = {err:e}");
        assert!(err < 5e-2, "{dtype:?}: {err}");
    }
}

#[test]
fn unprefixed_keys_load_like_prefixed_ones() {
    let weights: HashMap<String, Tensor> = weights()
        .into_iter()
        .map(|(name, t)| (name.trim_start_matches("text_model.").to_string(), t))
        .collect();
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let model = ClipTextModel::new(vb, &config()).unwrap();
    let refs = references();
    let out = model.forward(&refs["clip.input_ids"]).unwrap();
    assert!(max_abs_diff(&out.last_hidden_state, &refs["clip.last_hidden_state"]) <= TOLERANCE);
}

#[test]
fn pooling_follows_the_eos_rule() {
    let refs = references();
    // Batch of two: the fixture prompt, and ids without any EOS.
    let mut second = vec![5u32, 998, 3];
    second.resize(77, 0);
    let first = refs["clip.input_ids"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec2::<u32>()
        .unwrap()
        .remove(0);
    let ids = Tensor::new(vec![first, second], &Device::Cpu).unwrap();

    for (eos_token_id, positions) in [(999, [17, 0]), (2, [17, 1])] {
        // transformers pools at the first EOS (position 0 when there is none), or,
        // with the legacy `eos_token_id == 2`, at the first largest id.
        let cfg = ClipTextConfig {
            eos_token_id,
            ..config()
        };
        let vb = VarBuilder::from_tensors(weights(), DType::F32, &Device::Cpu);
        let out = ClipTextModel::new(vb, &cfg).unwrap().forward(&ids).unwrap();
        for (b, pos) in positions.into_iter().enumerate() {
            let row = out.last_hidden_state.get(b).unwrap().get(pos).unwrap();
            let pooled = out.pooled.get(b).unwrap();
            assert_eq!(
                max_abs_diff(&row, &pooled),
                0.0,
                "eos {eos_token_id}, row {b}"
            );
        }
    }
}

#[test]
fn text_projection_is_applied_when_present() {
    let cfg = ClipTextConfig {
        projection_dim: 5,
        ..config()
    };
    let projection = Tensor::arange(0f32, (5 * cfg.hidden_size) as f32, &Device::Cpu)
        .unwrap()
        .reshape((5, cfg.hidden_size))
        .unwrap()
        .affine(1e-2, -0.5)
        .unwrap();
    let mut weights = weights();
    weights.insert("text_projection.weight".into(), projection.clone());
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let model = ClipTextModel::new(vb, &cfg).unwrap();
    assert!(model.has_text_projection());
    let out = model.forward(&references()["clip.input_ids"]).unwrap();
    let expected = out.pooled.matmul(&projection.t().unwrap()).unwrap();
    let text_embeds = out.text_embeds.unwrap();
    assert_eq!(text_embeds.dims(), &[1, 5]);
    assert!(max_abs_diff(&text_embeds, &expected) < 1e-6);
}

#[test]
fn bad_checkpoints_are_errors_naming_the_tensor() {
    let name = "text_model.encoder.layers.1.mlp.fc1.weight";
    let mut weights = weights();
    weights.insert(
        name.into(),
        Tensor::zeros((3, 3), DType::F32, &Device::Cpu).unwrap(),
    );
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let err = ClipTextModel::new(vb, &config()).unwrap_err().to_string();
    assert!(err.contains(name), "{err}");

    let mut weights = self::weights();
    weights.remove("text_model.final_layer_norm.bias");
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let err = ClipTextModel::new(vb, &config()).unwrap_err().to_string();
    assert!(err.contains("final_layer_norm.bias"), "{err}");
}

#[test]
fn bad_inputs_and_configs_are_errors() {
    let vb = VarBuilder::from_tensors(weights(), DType::F32, &Device::Cpu);
    let model = ClipTextModel::new(vb, &config()).unwrap();
    let too_long = Tensor::zeros((1, 78), DType::U32, &Device::Cpu).unwrap();
    let err = model.forward(&too_long).unwrap_err().to_string();
    assert!(err.contains("78"), "{err}");
    let flat = Tensor::zeros(77, DType::U32, &Device::Cpu).unwrap();
    assert!(model.forward(&flat).is_err());

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("clip-config");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.json");
    std::fs::write(&path, r#"{"hidden_act": "gelu_new"}"#).unwrap();
    let err = ClipTextConfig::from_file(&path).unwrap_err().to_string();
    assert!(
        err.contains("config.json") && err.contains("gelu_new"),
        "{err}"
    );
    assert!(matches!(
        ClipTextConfig::from_file(&dir.join("absent.json")),
        Err(sd_core::Error::MissingFile(_))
    ));
}
