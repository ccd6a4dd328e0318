//! LoRA parity with diffusers on the tiny pipelines.
//!
//! `tools/fixtures/make_lora.py` wrote `fixtures/lora/`: a kohya+LoCon LoRA and a
//! PEFT LoRA for tiny SD 1.5, a PEFT LoRA for tiny SDXL covering both text
//! encoders, and diffusers' embeddings, final latents and image for each case,
//! with the LoRAs (`load_lora_weights` + `fuse_lora(lora_scale=…)`, or
//! `set_adapters(…, adapter_weights=…)` for two) and without them. Each LoRA
//! changes the image by far more than the tolerance, so a loader that ignores
//! one fails here.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use common::{failures_beyond, fixtures, generate_traced, max_abs, max_abs_diff};
use sd_core::lora::{ActiveLora, LoraAdapter, LoraFormat};
use sd_core::model::Component;
use sd_core::pipeline::{GenerateParams, GeneratedImage, StableDiffusion, VaeDecoder};
use sd_core::prompt::PromptSyntax;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    model: String,
    loras: Vec<CaseLora>,
    prompt: String,
    negative_prompt: Option<String>,
    steps: usize,
    guidance_scale: f64,
    width: usize,
    height: usize,
    seed: u64,
}

#[derive(Debug, Deserialize)]
struct CaseLora {
    file: String,
    strength: f32,
}

fn lora_dir() -> PathBuf {
    fixtures().join("lora")
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(lora_dir().join("cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn reference(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(lora_dir().join(format!("{name}.safetensors")), &Device::Cpu)
        .unwrap()
}

fn adapter(file: &str) -> Arc<LoraAdapter> {
    Arc::new(LoraAdapter::read(&lora_dir().join(file)).unwrap())
}

fn generate(model: &mut StableDiffusion, case: &Case) -> GeneratedImage {
    let params = GenerateParams {
        prompt: case.prompt.clone(),
        negative_prompt: case.negative_prompt.clone(),
        prompt_syntax: PromptSyntax::Plain,
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
    let checks = [
        ("prompt_embeds", &trace.prompt_embeds, 1e-3),
        ("latents_final", &trace.latents_final, latents_tolerance),
        ("image", &trace.image, 5e-3),
    ];
    failures_beyond(label, &checks, reference)
}

/// Every case with its LoRAs, then the same model with none: diffusers'
/// image each time, and after the LoRAs exactly the image a fresh load makes.
#[test]
fn loras_match_diffusers_and_leave_no_trace() {
    let mut failures = Vec::new();
    let mut models: HashMap<String, StableDiffusion> = HashMap::new();
    for case in cases() {
        let model = models.entry(case.model.clone()).or_insert_with(|| {
            StableDiffusion::load(&fixtures().join(&case.model), &Device::Cpu).unwrap()
        });
        let with_lora = reference(&case.name);
        let without = reference(&format!("{}.base", case.name));
        let change = max_abs_diff(&with_lora["image"], &without["image"]);
        assert!(
            change > 0.05,
            "{}: the LoRA changes the image by only {change}",
            case.name
        );

        let loras: Vec<ActiveLora> = case
            .loras
            .iter()
            .map(|l| ActiveLora {
                adapter: adapter(&l.file),
                strength: l.strength,
            })
            .collect();
        model.set_loras(&loras).unwrap();
        failures.extend(compare(&case.name, &generate(model, &case), &with_lora));

        model.set_loras(&[]).unwrap();
        let restored = generate(model, &case);
        failures.extend(compare(
            &format!("{} without LoRA", case.name),
            &restored,
            &without,
        ));
        let mut fresh = StableDiffusion::load(&fixtures().join(&case.model), &Device::Cpu).unwrap();
        assert_eq!(
            restored.png,
            generate(&mut fresh, &case).png,
            "{}: after its LoRAs the model is not the fresh one",
            case.name
        );
    }
    assert!(
        failures.is_empty(),
        "parity failures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn reads_both_layouts() {
    let kohya = adapter("sd15-kohya-locon.safetensors");
    assert_eq!(kohya.format(), LoraFormat::Kohya);
    assert_eq!(
        kohya.components(),
        [Component::TextEncoder, Component::Unet]
    );
    let peft = adapter("sdxl-peft.safetensors");
    assert_eq!(peft.format(), LoraFormat::Peft);
    assert_eq!(
        peft.components(),
        [
            Component::TextEncoder,
            Component::TextEncoder2,
            Component::Unet
        ]
    );
    assert!(kohya.bytes() > 0 && !peft.is_empty());
}

/// Writes `tensors` to a temporary LoRA file and returns its path.
fn write_lora(tag: &str, tensors: &[(&str, Tensor)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sd-core-lora-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{tag}.safetensors"));
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, t)| (k.to_string(), t.clone()))
        .collect();
    candle_core::safetensors::save(&map, &path).unwrap();
    path
}

/// A key that maps nowhere, another family's LoRA and a LyCORIS file are
/// errors naming the key and the file, and leave the model as it was.
#[test]
fn keys_that_map_nowhere_are_errors_naming_key_and_file() {
    let dev = Device::Cpu;
    let down = Tensor::ones((2, 32), candle_core::DType::F32, &dev).unwrap();
    let up = Tensor::ones((32, 2), candle_core::DType::F32, &dev).unwrap();
    let mut model = StableDiffusion::load(&fixtures().join("tiny-sd15"), &dev).unwrap();

    let stray = write_lora(
        "stray",
        &[
            (
                "lora_unet_down_blocks_0_no_such_layer.lora_down.weight",
                down.clone(),
            ),
            (
                "lora_unet_down_blocks_0_no_such_layer.lora_up.weight",
                up.clone(),
            ),
        ],
    );
    let err = model
        .set_loras(&[ActiveLora {
            adapter: Arc::new(LoraAdapter::read(&stray).unwrap()),
            strength: 1.0,
        }])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("lora_unet_down_blocks_0_no_such_layer") && err.contains("stray.safetensors"),
        "{err}"
    );

    let sdxl = adapter("sdxl-peft.safetensors");
    let err = model
        .set_loras(&[ActiveLora {
            adapter: sdxl,
            strength: 1.0,
        }])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sdxl-peft.safetensors") && err.contains("text_encoder_2"),
        "{err}"
    );

    let loha = write_lora("loha", &[("lora_unet_conv_in.hada_w1_a", down.clone())]);
    let err = LoraAdapter::read(&loha).unwrap_err().to_string();
    assert!(
        err.contains("LoHa") && err.contains("lora_unet_conv_in.hada_w1_a"),
        "{err}"
    );

    let unknown = write_lora(
        "unknown",
        &[("model.diffusion_model.x.weight", down.clone())],
    );
    let err = LoraAdapter::read(&unknown).unwrap_err().to_string();
    assert!(
        err.contains("model.diffusion_model.x.weight") && err.contains("unknown.safetensors"),
        "{err}"
    );

    let half = write_lora("half", &[("lora_unet_conv_in.lora_down.weight", down)]);
    let err = LoraAdapter::read(&half).unwrap_err().to_string();
    assert!(
        err.contains("lora_unet_conv_in") && err.contains("up"),
        "{err}"
    );
    std::fs::remove_dir_all(stray.parent().unwrap()).unwrap();
}

/// A kohya SDXL LoRA written against the original (SGM) UNet block names
/// (`lora_unet_input_blocks_4_1_…`) gives exactly the image of the same
/// LoRA written with diffusers' names, and a clearly different one from no LoRA.
#[test]
fn kohya_sdxl_files_with_sgm_block_names_match_diffusers_names() {
    use sd_core::model::single_file::unet_module_path;

    let dev = Device::Cpu;
    let checkpoint =
        candle_core::safetensors::load(fixtures().join("single-file/tiny-sdxl.safetensors"), &dev)
            .unwrap();
    let mut sgm = HashMap::new();
    let mut diffusers = HashMap::new();
    let mut names: Vec<&String> = checkpoint.keys().collect();
    names.sort();
    let rank = 2;
    for name in names {
        let Some(module) = name
            .strip_prefix("model.diffusion_model.")
            .and_then(|n| n.strip_suffix(".weight"))
        else {
            continue;
        };
        let weight = &checkpoint[name];
        let (down_shape, up_shape) = match *weight.dims() {
            [out, inp] => (vec![rank, inp], vec![out, rank]),
            [out, inp, kh, kw] => (vec![rank, inp, kh, kw], vec![out, rank, 1, 1]),
            _ => continue,
        };
        let mapped = unet_module_path(module, 2).expect("an SGM UNet module");
        let down = (Tensor::randn(0f32, 1.0, down_shape, &dev).unwrap() * 0.3).unwrap();
        let up = (Tensor::randn(0f32, 1.0, up_shape, &dev).unwrap() * 0.3).unwrap();
        let alpha = Tensor::new(1f32, &dev).unwrap();
        for (map, path) in [(&mut sgm, module.to_string()), (&mut diffusers, mapped)] {
            let prefix = format!("lora_unet_{}", path.replace('.', "_"));
            map.insert(format!("{prefix}.lora_down.weight"), down.clone());
            map.insert(format!("{prefix}.lora_up.weight"), up.clone());
            map.insert(format!("{prefix}.alpha"), alpha.clone());
        }
    }
    assert!(sgm.len() > 150, "only {} tensors", sgm.len());
    assert!(sgm
        .keys()
        .any(|k| k.starts_with("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.")));
    let dir = std::env::temp_dir().join(format!("sd-core-lora-sgm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (sgm_path, diffusers_path) = (
        dir.join("sgm.safetensors"),
        dir.join("diffusers.safetensors"),
    );
    candle_core::safetensors::save(&sgm, &sgm_path).unwrap();
    candle_core::safetensors::save(&diffusers, &diffusers_path).unwrap();

    let case = Case {
        name: "sdxl_sgm".into(),
        model: "tiny-sdxl".into(),
        loras: Vec::new(),
        prompt: "a red lighthouse on a cliff".into(),
        negative_prompt: Some("blurry".into()),
        steps: 3,
        guidance_scale: 6.0,
        width: 64,
        height: 64,
        seed: 5,
    };
    let mut model = StableDiffusion::load(&fixtures().join("tiny-sdxl"), &dev).unwrap();
    let plain = generate(&mut model, &case);
    let mut with = |path: &PathBuf| {
        model
            .set_loras(&[ActiveLora {
                adapter: Arc::new(LoraAdapter::read(path).unwrap()),
                strength: 0.8,
            }])
            .unwrap();
        generate(&mut model, &case)
    };
    let by_sgm = with(&sgm_path);
    let by_diffusers = with(&diffusers_path);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(by_sgm.png, by_diffusers.png, "SGM names give another image");
    let change = max_abs_diff(
        &by_sgm.trace.as_ref().unwrap().image,
        &plain.trace.as_ref().unwrap().image,
    );
    assert!(change > 0.05, "the LoRA changes the image by only {change}");
}
