//! Single-file checkpoints and `--vae`, on the tiny pipelines written out in
//! the LDM/SGM layout by `tools/fixtures/make_single_file.py` (which checked
//! that diffusers' `from_single_file(path, config=folder)` loads them back to
//! the folders' exact weights and images).

mod common;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use common::fixtures;
use sd_core::clip::ClipTextConfig;
use sd_core::image::DecodedImage;
use sd_core::model::safetensors::SafetensorsReader;
use sd_core::model::single_file::{detect, Architecture};
use sd_core::model::{
    Component, LoadOptions, ModelFamily, ModelRequest, ModelSource, PredictionType,
    SingleFileCheckpoint,
};
use sd_core::pipeline::{GenerateParams, ImageInput, StableDiffusion, VaeDecoder};
use sd_core::prompt::PromptSyntax;
use sd_core::schedulers::SchedulerConfig;
use sd_core::unet::UNetConfig;
use sd_core::vae::VaeConfig;
use sd_core::Interrupt;

fn single_file(name: &str) -> PathBuf {
    fixtures().join("single-file").join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("single-file-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn request(model: &Path, config: Option<&Path>) -> ModelRequest {
    ModelRequest {
        model: model.display().to_string(),
        config: config.map(|c| c.display().to_string()),
        ..ModelRequest::default()
    }
}

fn load(request: &ModelRequest) -> sd_core::Result<StableDiffusion> {
    StableDiffusion::load_request(request, &Device::Cpu, LoadOptions::default())
}

/// The settings `make_single_file.py` drew its images with, at the model's native size.
fn params(model: &StableDiffusion, inpaint: bool) -> GenerateParams {
    let (width, height) = model.profile().native_size;
    let traces = fixtures().join("traces/tiny-sd15-inpaint");
    let picture = |name: &str| {
        let bytes = std::fs::read(traces.join(name)).unwrap();
        DecodedImage::decode(&bytes, usize::MAX).unwrap()
    };
    GenerateParams {
        prompt: "a red lighthouse on a cliff".into(),
        negative_prompt: None,
        prompt_syntax: PromptSyntax::Plain,
        clip_skip: 0,
        steps: 3,
        guidance_scale: 7.5,
        width,
        height,
        seed: 7,
        scheduler: None,
        decoder: VaeDecoder::Full,
        image: inpaint.then(|| ImageInput {
            image: picture("mask_rect_64.png"),
            mask: Some(picture("mask_rect_64.png")),
            strength: 1.0,
        }),
    }
}

fn pixels(model: &mut StableDiffusion, params: &GenerateParams) -> Vec<u8> {
    model
        .generate(params, Interrupt::NEVER, &mut |_| ControlFlow::Continue(()))
        .unwrap()
        .rgb
}

/// Each family's single file, read with its folder's configs, gives the
/// folder's image bit for bit: every tensor reaches the same place.
#[test]
fn each_family_matches_its_folder() {
    for name in ["tiny-sd15", "tiny-sd2", "tiny-sdxl", "tiny-sd15-inpaint"] {
        let folder = fixtures().join(name);
        let file = single_file(&format!("{name}.safetensors"));
        let mut from_folder = StableDiffusion::load(&folder, &Device::Cpu).unwrap();
        let mut from_file = load(&request(&file, Some(&folder))).unwrap();
        assert_eq!(from_file.profile(), from_folder.profile(), "{name}");
        let params = params(&from_folder, name.ends_with("inpaint"));
        assert_eq!(
            pixels(&mut from_file, &params),
            pixels(&mut from_folder, &params),
            "{name}: the single file's image differs from the folder's"
        );
        assert_eq!(from_file.name(), name);
    }
}

/// The PNG metadata hash of a single file is AUTOMATIC1111's: the first 10
/// hex digits of the file's SHA-256.
#[test]
fn the_model_hash_is_the_files_sha256() {
    use sha2::{Digest, Sha256};
    let file = single_file("tiny-sd15-inpaint.safetensors");
    let model = load(&request(&file, Some(&fixtures().join("tiny-sd15-inpaint")))).unwrap();
    let digest = Sha256::digest(std::fs::read(&file).unwrap());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(model.model_hash(), Some(&hex[..10]));
}

fn architecture(name: &str, prediction: Option<PredictionType>) -> Architecture {
    let path = single_file(name);
    let reader = SafetensorsReader::open(std::slice::from_ref(&path)).unwrap();
    detect(&reader, &path, prediction).unwrap()
}

#[test]
fn the_family_comes_from_the_keys() {
    let arch = |family, inpainting, prediction| Architecture {
        family,
        inpainting,
        prediction,
    };
    use ModelFamily::*;
    use PredictionType::*;
    assert_eq!(
        architecture("tiny-sd15.safetensors", None),
        arch(Sd1, false, Epsilon)
    );
    assert_eq!(
        architecture("tiny-sd2.safetensors", None),
        arch(Sd2, false, VPrediction)
    );
    assert_eq!(
        architecture("tiny-sd2.safetensors", Some(Epsilon)),
        arch(Sd2, false, Epsilon)
    );
    assert_eq!(
        architecture("tiny-sdxl.safetensors", None),
        arch(Sdxl, false, Epsilon)
    );
    assert_eq!(
        architecture("tiny-sd15-inpaint.safetensors", None),
        arch(Sd1, true, Epsilon)
    );
}

/// A header-only safetensors file: `tensors` (name, shape) of F16 zeros,
/// written sparse, so full-size shapes cost no disk.
fn header_only(dir: &Path, name: &str, tensors: &[(&str, Vec<usize>)]) -> PathBuf {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (tensor, shape) in tensors {
        let bytes = 2 * shape.iter().product::<usize>();
        header.insert(
            tensor.to_string(),
            serde_json::json!({"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let header = serde_json::to_vec(&header).unwrap();
    let path = dir.join(name);
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    std::fs::write(&path, &bytes).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len((bytes.len() + offset) as u64).unwrap();
    path
}

/// A header-only checkpoint: its name, tensors, `--prediction-type`, and the
/// family, UNet input channels and latent size its built-in configs must give.
type FullSizeCase = (
    &'static str,
    Vec<(&'static str, Vec<usize>)>,
    Option<PredictionType>,
    ModelFamily,
    usize,
    usize,
);

/// Full-size checkpoints (headers only) select the built-in configs of their
/// standard architecture, and those configs parse and agree with the shapes.
#[test]
fn full_size_keys_select_the_built_in_configs() {
    let dir = scratch("full-size");
    let unet = |inputs: usize, context: usize| {
        vec![
            (
                "model.diffusion_model.input_blocks.0.0.weight",
                vec![320, inputs, 3, 3],
            ),
            (
                "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
                vec![640, context],
            ),
        ]
    };
    let sd1_text = (
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
        vec![49408, 768],
    );
    let sd2_text = (
        "cond_stage_model.model.token_embedding.weight",
        vec![49408, 1024],
    );
    let sdxl_text = [
        (
            "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
            vec![49408, 768],
        ),
        (
            "conditioner.embedders.1.model.positional_embedding",
            vec![77, 1280],
        ),
    ];
    let cases: Vec<FullSizeCase> = vec![
        (
            "sd15",
            [unet(4, 768), vec![sd1_text.clone()]].concat(),
            None,
            ModelFamily::Sd1,
            4,
            64,
        ),
        (
            "sd15-inpaint",
            [unet(9, 768), vec![sd1_text]].concat(),
            None,
            ModelFamily::Sd1,
            9,
            64,
        ),
        (
            "sd21",
            [unet(4, 1024), vec![sd2_text.clone()]].concat(),
            None,
            ModelFamily::Sd2,
            4,
            96,
        ),
        (
            "sd2-base",
            [unet(4, 1024), vec![sd2_text.clone()]].concat(),
            Some(PredictionType::Epsilon),
            ModelFamily::Sd2,
            4,
            64,
        ),
        (
            "sd2-inpaint",
            [unet(9, 1024), vec![sd2_text]].concat(),
            None,
            ModelFamily::Sd2,
            9,
            64,
        ),
        (
            "sdxl",
            [unet(4, 2048), sdxl_text.to_vec()].concat(),
            None,
            ModelFamily::Sdxl,
            4,
            128,
        ),
        (
            "sdxl-inpaint",
            [unet(9, 2048), sdxl_text.to_vec()].concat(),
            None,
            ModelFamily::Sdxl,
            9,
            128,
        ),
        // No text encoder: the cross-attention width tells the family.
        (
            "sdxl-unet-only",
            unet(4, 2048),
            None,
            ModelFamily::Sdxl,
            4,
            128,
        ),
    ];
    for (name, tensors, prediction, family, in_channels, sample_size) in cases {
        let path = header_only(&dir, &format!("{name}.safetensors"), &tensors);
        let source = SingleFileCheckpoint::open(&path, None, prediction).unwrap();
        assert_eq!(source.architecture().family, family, "{name}");
        let unet = UNetConfig::from_config(&source.config(Component::Unet).unwrap()).unwrap();
        assert_eq!(unet.in_channels, in_channels, "{name}");
        let expected_context = match family {
            ModelFamily::Sd1 => 768,
            ModelFamily::Sd2 => 1024,
            ModelFamily::Sdxl => 2048,
        };
        assert_eq!(
            unet.cross_attention_dim,
            sd_core::unet::PerBlock::Same(expected_context),
            "{name}"
        );
        let native = unet.sample_size.unwrap().height_width();
        assert_eq!(native, (sample_size, sample_size), "{name}");
        VaeConfig::from_config(&source.config(Component::Vae).unwrap()).unwrap();
        let text =
            ClipTextConfig::from_config(&source.config(Component::TextEncoder).unwrap()).unwrap();
        assert_eq!(
            text.hidden_size,
            if family == ModelFamily::Sd2 {
                1024
            } else {
                768
            }
        );
        assert_eq!(
            source.has(Component::TextEncoder2),
            family == ModelFamily::Sdxl
        );
        if family == ModelFamily::Sdxl {
            let text2 = source.config(Component::TextEncoder2).unwrap();
            assert_eq!(
                ClipTextConfig::from_config(&text2).unwrap().hidden_size,
                1280
            );
        }
        let scheduler = SchedulerConfig::from_config(&source.scheduler_config().unwrap()).unwrap();
        let v = family == ModelFamily::Sd2 && in_channels == 4 && prediction.is_none();
        let expected = if v { "v_prediction" } else { "epsilon" };
        assert_eq!(scheduler.prediction_type, expected, "{name}");
    }
}

#[test]
fn prediction_type_overrides_the_scheduler_config() {
    let file = single_file("tiny-sd2.safetensors");
    let mut request = request(&file, Some(&fixtures().join("tiny-sd2")));
    let mut v = load(&request).unwrap();
    request.prediction_type = Some(PredictionType::Epsilon);
    let mut epsilon = load(&request).unwrap();
    let params = params(&v, false);
    assert_ne!(pixels(&mut v, &params), pixels(&mut epsilon, &params));
}

#[test]
fn pickle_checkpoints_are_refused_with_the_reason_and_the_cure() {
    let dir = scratch("pickle");
    let ckpt = dir.join("model.ckpt");
    std::fs::write(&ckpt, b"PK\x03\x04 a torch.save zip").unwrap();
    let disguised = dir.join("model.safetensors");
    std::fs::write(&disguised, b"\x80\x02}q\x00 a pickle").unwrap();
    for path in [&ckpt, &disguised] {
        let err = load(&request(path, None))
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains(&path.display().to_string())
                && err.contains("pickle")
                && err.contains("runs any code")
                && err.contains("save_file"),
            "{err}"
        );
    }
    let vae = ModelRequest {
        vae: Some(dir.join("vae.pt").display().to_string()),
        ..request(&fixtures().join("tiny-sd15"), None)
    };
    let err = load(&vae).err().expect("refused").to_string();
    assert!(err.contains("vae.pt") && err.contains("pickle"), "{err}");
}

/// A copy of `tiny-sd15.safetensors` changed by `edit`.
fn edited_checkpoint(dir: &Path, edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> PathBuf {
    let mut tensors =
        candle_core::safetensors::load(single_file("tiny-sd15.safetensors"), &Device::Cpu).unwrap();
    edit(&mut tensors);
    let path = dir.join("edited.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    path
}

#[test]
fn a_missing_or_misshapen_tensor_is_an_error_naming_it_and_the_file() {
    let dir = scratch("bad-tensors");
    let config = fixtures().join("tiny-sd15");
    let missing = edited_checkpoint(&dir, |t| {
        t.remove("model.diffusion_model.input_blocks.1.1.proj_in.weight")
            .unwrap();
    });
    let err = load(&request(&missing, Some(&config)))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("edited.safetensors")
            && err.contains("down_blocks.0.attentions.0.proj_in.weight")
            && err.contains("model.diffusion_model.*"),
        "{err}"
    );
    let misshapen = edited_checkpoint(&dir, |t| {
        let name = "first_stage_model.decoder.conv_out.weight";
        let wrong = t[name].narrow(0, 0, 2).unwrap();
        t.insert(name.into(), wrong);
    });
    let err = load(&request(&misshapen, Some(&config)))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("edited.safetensors")
            && err.contains("decoder.conv_out.weight")
            && err.contains("first_stage_model.decoder.conv_out.weight"),
        "{err}"
    );
    let no_vae = edited_checkpoint(&dir, |t| {
        t.retain(|name, _| !name.starts_with("first_stage_model."))
    });
    let err = load(&request(&no_vae, Some(&config)))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("no vae tensors (first_stage_model.*)"),
        "{err}"
    );
}

/// `--vae` replaces the decoder: the image changes, and matches diffusers'
/// pipeline with that VAE, whether it comes as an A1111 VAE file (LDM keys
/// without a prefix) or as a diffusers folder.
#[test]
fn a_vae_override_replaces_the_decoder_as_diffusers_does() {
    let reference =
        candle_core::safetensors::load(single_file("tiny-sd15-vae-case.safetensors"), &Device::Cpu)
            .unwrap();
    let to_u8 = |t: &Tensor| -> Vec<u8> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
            .collect()
    };
    let max_diff = |a: &[u8], b: &[u8]| {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap()
    };
    let folder = fixtures().join("tiny-sd15");
    let mut own = StableDiffusion::load(&folder, &Device::Cpu).unwrap();
    let params = params(&own, false);
    let own_pixels = pixels(&mut own, &params);
    assert!(max_diff(&own_pixels, &to_u8(&reference["image_own_vae"])) <= 2);
    let mut images = Vec::new();
    for vae in ["tiny-sd15-vae.safetensors", "tiny-sd15-vae"] {
        let request = ModelRequest {
            vae: Some(single_file(vae).display().to_string()),
            ..request(&folder, None)
        };
        let mut model = load(&request).unwrap();
        let image = pixels(&mut model, &params);
        let to_reference = max_diff(&image, &to_u8(&reference["image"]));
        let to_own = max_diff(&image, &own_pixels);
        eprintln!(
            "{vae}: max |Δ| to diffusers {to_reference}/255, to the model's own VAE {to_own}/255"
        );
        assert!(to_reference <= 2, "{vae}: {to_reference}");
        assert!(to_own >= 100, "{vae}: the VAE changed little ({to_own})");
        images.push(image);
    }
    assert_eq!(
        images[0], images[1],
        "the VAE file and the VAE folder differ"
    );
    let on_file = ModelRequest {
        vae: Some(
            single_file("tiny-sd15-vae.safetensors")
                .display()
                .to_string(),
        ),
        ..request(&single_file("tiny-sd15.safetensors"), Some(&folder))
    };
    assert_eq!(pixels(&mut load(&on_file).unwrap(), &params), images[0]);
}
