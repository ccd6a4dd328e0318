//! CLIP skip against the rule diffusers' pipelines apply, checked on the tiny
//! text encoders (3 layers each) by picking the hidden state by hand.
//!
//! `StableDiffusionPipeline.encode_prompt` (SD 1.x / 2.x):
//!
//! ```python
//! prompt_embeds = self.text_encoder(ids, attention_mask=attention_mask, output_hidden_states=True)
//! prompt_embeds = prompt_embeds[-1][-(clip_skip + 1)]
//! prompt_embeds = self.text_encoder.text_model.final_layer_norm(prompt_embeds)
//! ```
//!
//! `StableDiffusionXLPipeline.encode_prompt`, for each of the two encoders
//! (the pooled embedding stays the last layer's):
//!
//! ```python
//! prompt_embeds = text_encoder(ids, output_hidden_states=True)
//! pooled_prompt_embeds = prompt_embeds[0]
//! prompt_embeds = prompt_embeds.hidden_states[-(clip_skip + 2)]
//! ```

mod common;

use candle_core::{DType, Device, Tensor};
use common::{fixtures, max_abs_diff};
use sd_core::clip::{ClipTextConfig, ClipTextModel, ClipTextOutput};
use sd_core::model::{Component, DiffusersFolder, LoadOptions, ModelSource, WeightVariant};
use sd_core::pipeline::{GenerateParams, StableDiffusion, VaeDecoder};
use sd_core::prompt::{PromptEncoding, PromptSyntax, TextEncoders};
use sd_core::{Error, Param};

const PROMPT: &str = "a photo of a lighthouse at dusk";

fn source(folder: &str) -> DiffusersFolder {
    DiffusersFolder::open(&fixtures().join(folder), WeightVariant::Full).unwrap()
}

/// One encoder of `source` run on `PROMPT` as diffusers tokenizes it.
fn run_encoder(source: &DiffusersFolder, component: Component) -> (ClipTextModel, ClipTextOutput) {
    let tokenizer = source.tokenizer(component).unwrap();
    let config = ClipTextConfig::from_config(&source.config(component).unwrap()).unwrap();
    let model = source
        .weights(component, DType::F32, &Device::Cpu)
        .unwrap()
        .build(|vb| ClipTextModel::new(vb, &config))
        .unwrap();
    let ids = tokenizer.encode(PROMPT);
    let len = ids.len();
    let ids = Tensor::from_vec(ids, (1, len), &Device::Cpu).unwrap();
    let out = model.forward(&ids).unwrap();
    (model, out)
}

/// `hidden_states[-n]`.
fn from_end(out: &ClipTextOutput, n: usize) -> Tensor {
    out.hidden_states[out.hidden_states.len() - n].clone()
}

fn plain(clip_skip: usize) -> PromptEncoding {
    PromptEncoding {
        syntax: PromptSyntax::Plain,
        clip_skip,
    }
}

fn a1111(clip_skip: usize) -> PromptEncoding {
    PromptEncoding {
        syntax: PromptSyntax::A1111,
        clip_skip,
    }
}

fn assert_identical(name: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(max_abs_diff(got, want), 0.0, "{name}");
}

/// SD 1.x: `final_layer_norm(hidden_states[-(k + 1)])` in both syntaxes;
/// 0 is `last_hidden_state`, exactly as before. The fixture's final layer norm
/// has random weights, so skipping it would show.
#[test]
fn sd1_takes_an_earlier_layer_through_the_final_norm() {
    let folder = source("a1111/tiny-sd15-text");
    let (model, out) = run_encoder(&folder, Component::TextEncoder);
    let mut encoders =
        TextEncoders::load(&folder, false, LoadOptions::default(), &Device::Cpu).unwrap();
    assert_eq!(encoders.max_clip_skip(), 2);

    let none = encoders.encode(PROMPT, PromptSyntax::Plain).unwrap();
    assert_identical("clip_skip 0", &none.hidden, &out.last_hidden_state);
    for k in 1..=2 {
        let want = model
            .apply_final_layer_norm(&from_end(&out, k + 1))
            .unwrap();
        for encoding in [plain(k), a1111(k)] {
            let got = encoders.encode(PROMPT, encoding).unwrap();
            assert_identical(&format!("{encoding:?}"), &got.hidden, &want);
            assert!(got.pooled.is_none());
        }
        assert!(
            max_abs_diff(&want, &none.hidden) > 1e-3,
            "clip_skip {k} changed nothing"
        );
    }
    // Cached results are kept apart by clip_skip: 0 again is the last layer.
    let again = encoders.encode(PROMPT, plain(0)).unwrap();
    assert_identical("clip_skip 0 after 2", &again.hidden, &out.last_hidden_state);
}

/// SDXL: `hidden_states[-(k + 2)]` of both encoders, concatenated, without the
/// norm; the pooled embedding is the one clip_skip 0 gives.
#[test]
fn sdxl_steps_back_from_the_penultimate_layer() {
    let folder = source("tiny-sdxl");
    let (_, first) = run_encoder(&folder, Component::TextEncoder);
    let (_, second) = run_encoder(&folder, Component::TextEncoder2);
    let mut encoders =
        TextEncoders::load(&folder, true, LoadOptions::default(), &Device::Cpu).unwrap();
    assert_eq!(encoders.max_clip_skip(), 2);

    let none = encoders.encode(PROMPT, PromptSyntax::Plain).unwrap();
    for k in 0..=2 {
        let want = Tensor::cat(&[from_end(&first, k + 2), from_end(&second, k + 2)], 2).unwrap();
        for encoding in [plain(k), a1111(k)] {
            let got = encoders.encode(PROMPT, encoding).unwrap();
            assert_identical(&format!("{encoding:?}"), &got.hidden, &want);
            assert_identical(
                &format!("{encoding:?} pooled"),
                got.pooled.as_ref().unwrap(),
                none.pooled.as_ref().unwrap(),
            );
        }
    }
}

/// A clip_skip the encoders have no layer for is refused, naming `clip_skip`,
/// by the encoders and by the parameter check against the model's profile.
#[test]
fn a_clip_skip_past_the_first_layer_is_refused() {
    let folder = source("a1111/tiny-sd15-text");
    let mut encoders =
        TextEncoders::load(&folder, false, LoadOptions::default(), &Device::Cpu).unwrap();
    match encoders.encode(PROMPT, plain(3)) {
        Err(Error::Param(e)) => {
            assert_eq!(e.param, Param::ClipSkip);
            assert!(e.message.contains("at most 2"), "{}", e.message);
        }
        other => panic!("expected a clip_skip error, got {:?}", other.map(|_| ())),
    }

    let model = StableDiffusion::load(&fixtures().join("tiny-sd15"), &Device::Cpu).unwrap();
    let profile = model.profile();
    assert_eq!(profile.max_clip_skip, 2);
    let params = |clip_skip| GenerateParams {
        prompt: PROMPT.into(),
        negative_prompt: None,
        prompt_syntax: PromptSyntax::A1111,
        clip_skip,
        steps: 2,
        guidance_scale: 7.5,
        width: 64,
        height: 64,
        seed: 0,
        scheduler: None,
        image: None,
        decoder: VaeDecoder::Full,
    };
    assert!(params(2).check(&profile).is_ok());
    let refused = params(3).check(&profile).unwrap_err();
    assert_eq!(refused.param, Param::ClipSkip);
}
