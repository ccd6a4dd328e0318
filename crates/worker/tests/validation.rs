//! Request validation against a loaded model's profile, the worker's defaults
//! and its limits: defaults filled in, every bad value named by its field.

mod common;

use common::png_base64;
use sd_contract::limits::{
    MAX_CLIP_SKIP, MAX_GUIDANCE_SCALE, MAX_NUM_IMAGES, MAX_PROMPT_CHARS, MAX_STEPS,
};
use sd_contract::{
    ErrorCode, GenerationFields, ImageGenerationRequest, ImageInpaintRequest,
    ImageTransformRequest, JobRequest, Limits, LoraConfig, SchedulerKind,
};
use sd_core::model::{ModelFamily, ModelProfile};
use sd_core::pipeline::Defaults;
use sd_worker::validation::validate;

fn defaults() -> Defaults {
    Defaults {
        width: 512,
        height: 512,
        steps: 25,
        guidance_scale: 7.5,
        scheduler: sd_core::schedulers::SchedulerKind::Pndm,
        prompt_syntax: sd_core::prompt::PromptSyntax::A1111,
        decoder: sd_core::pipeline::VaeDecoder::Full,
    }
}

fn model() -> ModelProfile {
    ModelProfile {
        family: ModelFamily::Sd1,
        inpainting: false,
        native_size: (512, 512),
        vae_scale_factor: 8,
        scheduler: sd_core::schedulers::SchedulerKind::Pndm,
        step_limits: Default::default(),
        max_clip_skip: 11,
        tiny_decoder: false,
        precision: Default::default(),
    }
}

fn limits() -> Limits {
    Limits {
        min_size: 64,
        max_size: 1024,
        size_multiple: 8,
        max_prompt_chars: MAX_PROMPT_CHARS as u32,
        max_steps: MAX_STEPS,
        max_guidance_scale: MAX_GUIDANCE_SCALE,
        max_num_images: MAX_NUM_IMAGES,
        max_queue: 4,
        max_body_bytes: 1 << 20,
        max_input_pixels: 200 * 200,
    }
}

fn generation(prompt: &str) -> GenerationFields {
    GenerationFields {
        prompt: prompt.into(),
        ..Default::default()
    }
}

fn text_job(generation: GenerationFields) -> JobRequest {
    JobRequest::ImageGeneration(ImageGenerationRequest { generation })
}

fn field_of(req: GenerationFields) -> String {
    let err = validate(text_job(req), &model(), &defaults(), &limits(), None).unwrap_err();
    let detail = err.detail();
    assert_eq!(detail.code, ErrorCode::InvalidRequest, "{detail:?}");
    detail.field.unwrap()
}

#[test]
fn defaults_fill_missing_values_and_a_seed_is_chosen() {
    let job = validate(
        text_job(generation("a cat")),
        &model(),
        &defaults(),
        &limits(),
        None,
    )
    .unwrap();
    let p = job.params();
    assert_eq!((p.width, p.height, p.steps), (512, 512, 25));
    assert_eq!(p.guidance_scale, 7.5);
    assert_eq!(p.scheduler, SchedulerKind::Pndm);
    assert!(p.seed < 1 << 32);
    assert_eq!(p.num_images, 1);
    assert_eq!(p.clip_skip, 0);
    assert_eq!(job.into_runnable().unwrap().generation().clip_skip, 0);
}

/// `clip_skip` reaches the generation and the reported parameters; past the
/// wire's bound, or past the model's encoders, it is refused by name.
#[test]
fn clip_skip_is_bounded_by_the_wire_and_by_the_model() {
    let with = |clip_skip| GenerationFields {
        clip_skip: Some(clip_skip),
        ..generation("a cat")
    };
    let job = validate(
        text_job(with(MAX_CLIP_SKIP)),
        &model(),
        &defaults(),
        &limits(),
        None,
    )
    .unwrap();
    assert_eq!(job.params().clip_skip, MAX_CLIP_SKIP);
    assert_eq!(
        job.into_runnable().unwrap().generation().clip_skip,
        MAX_CLIP_SKIP as usize
    );
    assert_eq!(field_of(with(MAX_CLIP_SKIP + 1)), "clip_skip");
    // A model whose shallower encoder has fewer layers takes less.
    let shallow = ModelProfile {
        max_clip_skip: 2,
        ..model()
    };
    let refused = validate(text_job(with(3)), &shallow, &defaults(), &limits(), None).unwrap_err();
    let detail = refused.detail();
    assert_eq!(detail.field.as_deref(), Some("clip_skip"));
    assert!(detail.message.contains("at most 2"), "{}", detail.message);
}

#[test]
fn given_values_win() {
    let req = GenerationFields {
        steps: Some(3),
        guidance_scale: Some(0.0),
        width: Some(64),
        height: Some(96),
        seed: Some(42),
        scheduler: Some(SchedulerKind::EulerA),
        loras: Some(vec![]),
        ..generation("a cat")
    };
    let job = validate(text_job(req), &model(), &defaults(), &limits(), None).unwrap();
    let p = job.params();
    assert_eq!((p.width, p.height, p.steps, p.seed), (64, 96, 3, 42));
    assert_eq!(p.scheduler, SchedulerKind::EulerA);
}

/// A prompt is counted in characters (two bytes each here), as JSON Schema's
/// `maxLength` counts; one more character is refused before any tokenizing,
/// as is a megabyte of prompt.
#[test]
fn over_long_prompts_are_refused_by_name() {
    let longest = "é".repeat(MAX_PROMPT_CHARS);
    let accepted = |req: GenerationFields| {
        validate(text_job(req), &model(), &defaults(), &limits(), None).is_ok()
    };
    assert!(accepted(generation(&longest)));
    let negative = |text: &str| GenerationFields {
        negative_prompt: Some(text.into()),
        ..generation("x")
    };
    assert!(accepted(negative(&longest)));
    let over = format!("{longest}a");
    assert_eq!(field_of(generation(&over)), "prompt");
    assert_eq!(field_of(negative(&over)), "negative_prompt");
    let err = validate(
        text_job(generation(&"a, ".repeat(350_000))),
        &model(),
        &defaults(),
        &limits(),
        None,
    )
    .unwrap_err();
    let message = err.detail().message;
    assert!(
        message.contains("at most 4096 characters, got 1050000"),
        "{message}"
    );
}

/// LCM picks its timesteps from the model's `original_inference_steps` (50
/// here): more is refused up front, naming the limit, not by the engine.
#[test]
fn lcm_steps_are_held_to_the_models_original_steps() {
    let lcm = |steps: u32| GenerationFields {
        steps: Some(steps),
        scheduler: Some(SchedulerKind::Lcm),
        ..generation("x")
    };
    let job = validate(text_job(lcm(50)), &model(), &defaults(), &limits(), None).unwrap();
    assert_eq!(job.params().steps, 50);
    for steps in [51, 149, 150] {
        let err =
            validate(text_job(lcm(steps)), &model(), &defaults(), &limits(), None).unwrap_err();
        let detail = err.detail();
        assert_eq!(detail.field.as_deref(), Some("steps"));
        assert!(
            detail.message.contains("at most 50 with the lcm scheduler"),
            "{}",
            detail.message
        );
    }
    let euler = GenerationFields {
        scheduler: Some(SchedulerKind::Euler),
        ..lcm(150)
    };
    assert!(validate(text_job(euler), &model(), &defaults(), &limits(), None).is_ok());
}

#[test]
fn each_bad_value_names_its_field() {
    assert_eq!(field_of(generation("  ")), "prompt");
    for steps in [0, 151] {
        let req = GenerationFields {
            steps: Some(steps),
            ..generation("x")
        };
        assert_eq!(field_of(req), "steps");
    }
    for g in [-0.5, 30.5, f64::NAN] {
        let req = GenerationFields {
            guidance_scale: Some(g),
            ..generation("x")
        };
        assert_eq!(field_of(req), "guidance_scale");
    }
    for w in [100, 56, 2048] {
        let req = GenerationFields {
            width: Some(w),
            ..generation("x")
        };
        assert_eq!(field_of(req), "width");
    }
    let req = GenerationFields {
        height: Some(513),
        ..generation("x")
    };
    assert_eq!(field_of(req), "height");
    let req = GenerationFields {
        loras: Some(vec![LoraConfig {
            path: "a.safetensors".into(),
            strength: None,
        }]),
        ..generation("x")
    };
    assert_eq!(field_of(req), "loras");
}

/// One to eight images; each image's seed follows the last, wrapping past
/// the largest seed.
#[test]
fn num_images_is_bounded_and_numbers_the_seeds() {
    for n in [0, MAX_NUM_IMAGES + 1, u32::MAX] {
        let req = GenerationFields {
            num_images: Some(n),
            ..generation("x")
        };
        let err = validate(text_job(req), &model(), &defaults(), &limits(), None).unwrap_err();
        let detail = err.detail();
        assert_eq!(detail.field.as_deref(), Some("num_images"), "{detail:?}");
        assert!(detail.message.contains("between 1 and 8"), "{detail:?}");
    }
    let req = GenerationFields {
        num_images: Some(MAX_NUM_IMAGES),
        seed: Some(u64::MAX - 1),
        ..generation("x")
    };
    let job = validate(text_job(req), &model(), &defaults(), &limits(), None)
        .unwrap()
        .into_runnable()
        .unwrap();
    assert_eq!(job.num_images(), 8);
    let seeds: Vec<u64> = (0..3).map(|i| job.seed_of(i)).collect();
    assert_eq!(seeds, [u64::MAX - 1, u64::MAX, 0]);
    assert_eq!(job.params().seed, u64::MAX - 1);
}

fn transform(strength: Option<f64>) -> ImageTransformRequest {
    ImageTransformRequest {
        generation: generation("x"),
        input_image: png_base64(140, 106),
        strength,
    }
}

fn inpaint(mask_width: usize) -> ImageInpaintRequest {
    ImageInpaintRequest {
        generation: generation("x"),
        init_image: png_base64(140, 106),
        mask_image: png_base64(mask_width, 106),
        strength: None,
    }
}

fn job_field(req: JobRequest) -> String {
    let err = validate(req, &model(), &defaults(), &limits(), None).unwrap_err();
    let detail = err.detail();
    assert_eq!(detail.code, ErrorCode::InvalidRequest, "{detail:?}");
    detail.field.unwrap()
}

#[test]
fn image_jobs_take_the_picture_size_and_default_strengths() {
    let job = validate(
        JobRequest::ImageTransform(transform(None)),
        &model(),
        &defaults(),
        &limits(),
        None,
    )
    .unwrap();
    let p = job.params();
    assert_eq!((p.width, p.height, p.strength), (136, 104, Some(0.8)));
    let job = job.into_runnable().unwrap();
    let input = job.generation().image.as_ref().unwrap();
    assert_eq!((input.image.width(), input.mask.is_none()), (140, true));

    let data_url = format!("data:image/png;base64,{}", png_base64(140, 106));
    let req = ImageInpaintRequest {
        generation: GenerationFields {
            width: Some(96),
            ..generation("x")
        },
        init_image: data_url,
        ..inpaint(140)
    };
    let job = validate(
        JobRequest::ImageInpaint(req),
        &model(),
        &defaults(),
        &limits(),
        None,
    )
    .unwrap();
    let p = job.params();
    assert_eq!((p.width, p.height, p.strength), (96, 104, Some(1.0)));
    let job = job.into_runnable().unwrap();
    assert!(job.generation().image.as_ref().unwrap().mask.is_some());
}

#[test]
fn each_bad_picture_names_its_field() {
    let transform_with = |input_image: String| {
        JobRequest::ImageTransform(ImageTransformRequest {
            input_image,
            ..transform(None)
        })
    };
    for bad in ["", "not base64!", "AAAA", "data:image/png,AAAA"] {
        assert_eq!(
            job_field(transform_with(bad.into())),
            "input_image",
            "{bad}"
        );
    }
    assert_eq!(
        job_field(transform_with(png_base64(201, 200))),
        "input_image"
    );
    assert_eq!(job_field(transform_with(png_base64(7, 50))), "input_image");
    for strength in [-0.1, 1.5, f64::NAN, 0.01] {
        let req = JobRequest::ImageTransform(transform(Some(strength)));
        assert_eq!(job_field(req), "strength", "{strength}");
    }
    let req = ImageTransformRequest {
        generation: GenerationFields {
            width: Some(60),
            ..generation("x")
        },
        ..transform(None)
    };
    assert_eq!(job_field(JobRequest::ImageTransform(req)), "width");

    assert_eq!(
        job_field(JobRequest::ImageInpaint(inpaint(128))),
        "mask_image"
    );
    let req = ImageInpaintRequest {
        mask_image: "AAAA".into(),
        ..inpaint(140)
    };
    assert_eq!(job_field(JobRequest::ImageInpaint(req)), "mask_image");
    let req = ImageInpaintRequest {
        init_image: "AAAA".into(),
        ..inpaint(140)
    };
    assert_eq!(job_field(JobRequest::ImageInpaint(req)), "init_image");
    let req = ImageInpaintRequest {
        strength: Some(2.0),
        ..inpaint(140)
    };
    assert_eq!(job_field(JobRequest::ImageInpaint(req)), "strength");
}

#[test]
fn an_inpainting_model_needs_a_picture_and_a_mask() {
    let inpainting = ModelProfile {
        inpainting: true,
        ..model()
    };
    let check = |req: JobRequest| validate(req, &inpainting, &defaults(), &limits(), None);
    let field = |req: JobRequest| check(req).unwrap_err().detail().field.unwrap();
    assert_eq!(field(text_job(generation("x"))), "mask_image");
    assert_eq!(
        field(JobRequest::ImageTransform(transform(None))),
        "mask_image"
    );
    let job = check(JobRequest::ImageInpaint(inpaint(140))).unwrap();
    let job = job.into_runnable().unwrap();
    assert!(job.generation().image.as_ref().unwrap().mask.is_some());
}

/// A LoRA file for tiny SD 1.5 (`tools/fixtures/make_lora.py`): jobs' LoRA
/// headers are read at submit.
fn fixture_lora() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/lora/sd15-kohya-locon.safetensors")
}

/// A1111-syntax prompts take `<lora:NAME:STRENGTH>` tags: they leave the
/// prompt and join the job's LoRAs after `loras`; plain prompts keep them as text.
#[test]
fn a1111_lora_tags_become_loras() {
    let dir = std::env::temp_dir().join(format!("sd-worker-lora-tags-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture_lora(), dir.join("style.safetensors")).unwrap();
    std::fs::copy(fixture_lora(), dir.join("ink.safetensors")).unwrap();
    std::fs::write(dir.join("junk.safetensors"), b"x").unwrap();
    let loras = sd_worker::loras::LoraDir::open(&dir).unwrap();
    let req = GenerationFields {
        loras: Some(vec![LoraConfig {
            path: "ink".into(),
            strength: Some(-0.5),
        }]),
        ..generation("a cat <lora:style:0.7>, red<lora:ink>")
    };
    let job = validate(
        text_job(req.clone()),
        &model(),
        &defaults(),
        &limits(),
        Some(&loras),
    )
    .unwrap()
    .into_runnable()
    .unwrap();
    assert_eq!(job.params().prompt, "a cat , red");
    let got: Vec<(&str, f32)> = job
        .loras()
        .iter()
        .map(|l| (l.name.as_str(), l.strength))
        .collect();
    assert_eq!(got, [("ink", -0.5), ("style", 0.7), ("ink", 1.0)]);

    let plain = GenerationFields {
        prompt_syntax: Some(sd_contract::PromptSyntax::Plain),
        loras: None,
        ..req.clone()
    };
    let job = validate(
        text_job(plain),
        &model(),
        &defaults(),
        &limits(),
        Some(&loras),
    )
    .unwrap();
    assert_eq!(job.params().prompt, "a cat <lora:style:0.7>, red<lora:ink>");

    for (prompt, needle) in [
        ("x <lora:missing>", "no LoRA named"),
        ("x <lora:junk>", "LoRA \"junk\""),
        ("x <lora:style:strong>", "a number"),
        ("x <lora:style:1:1>", "not supported"),
        ("x <lora:style", "not closed"),
    ] {
        let err = validate(
            text_job(generation(prompt)),
            &model(),
            &defaults(),
            &limits(),
            Some(&loras),
        )
        .unwrap_err();
        let detail = err.detail();
        assert_eq!(detail.field.as_deref(), Some("prompt"), "{prompt}");
        assert!(
            detail.message.contains(needle),
            "{prompt}: {}",
            detail.message
        );
    }
    let refused = validate(
        text_job(generation("x <lora:style>")),
        &model(),
        &defaults(),
        &limits(),
        None,
    )
    .unwrap_err();
    assert!(refused.detail().message.contains("--lora-dir"));
    std::fs::remove_dir_all(dir).unwrap();
}

/// At most eight LoRAs, each with a strength from -4 to 4.
#[test]
fn loras_are_bounded() {
    use sd_contract::limits::{MAX_LORAS, MAX_LORA_STRENGTH};
    let dir = std::env::temp_dir().join(format!("sd-worker-lora-bounds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture_lora(), dir.join("a.safetensors")).unwrap();
    let loras = sd_worker::loras::LoraDir::open(&dir).unwrap();
    let with = |count: usize, strength: f32| GenerationFields {
        loras: Some(vec![
            LoraConfig {
                path: "a".into(),
                strength: Some(strength),
            };
            count
        ]),
        ..generation("x")
    };
    let verdict = |req| {
        validate(
            text_job(req),
            &model(),
            &defaults(),
            &limits(),
            Some(&loras),
        )
        .err()
        .and_then(|e| e.detail().field)
    };
    assert_eq!(verdict(with(MAX_LORAS, MAX_LORA_STRENGTH)), None);
    assert_eq!(verdict(with(1, -MAX_LORA_STRENGTH)), None);
    assert_eq!(verdict(with(MAX_LORAS + 1, 1.0)), Some("loras".into()));
    assert_eq!(
        verdict(with(2, MAX_LORA_STRENGTH + 0.01)),
        Some("loras[0].strength".into())
    );
    assert_eq!(
        verdict(with(1, -MAX_LORA_STRENGTH - 0.01)),
        Some("loras[0].strength".into())
    );
    std::fs::remove_dir_all(dir).unwrap();
}
