//! LoRAs over HTTP, on the real binary serving tiny SD 1.5 with a `--lora-dir`
//! of the fixtures' LoRAs (`fixtures/lora`, written by `tools/fixtures/make_lora.py`):
//! listing, a job's LoRA by name against diffusers' image, names that must be
//! refused without the worker opening what they point at, no LoRA leaking into
//! the next job, and memory staying flat over 50 jobs alternating LoRA sets.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use common::*;
use sd_contract::JobEvent;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// A scratch folder holding `loras/` (the two SD 1.5 fixture LoRAs, one in a
/// subfolder, and a symlink leading out of it) and, beside it, a FIFO named
/// like a LoRA: opening it for reading would block, so a worker that opened
/// it would never answer.
fn lora_dir(tag: &str) -> (PathBuf, PathBuf) {
    let base = std::env::temp_dir().join(format!("sd-worker-loras-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let dir = base.join("loras");
    std::fs::create_dir_all(dir.join("styles")).unwrap();
    let lora = fixtures().join("lora");
    std::fs::copy(
        lora.join("sd15-kohya-locon.safetensors"),
        dir.join("kohya.safetensors"),
    )
    .unwrap();
    std::fs::copy(
        lora.join("sd15-peft.safetensors"),
        dir.join("styles/peft.safetensors"),
    )
    .unwrap();
    std::fs::copy(
        lora.join("sdxl-peft.safetensors"),
        dir.join("xl.safetensors"),
    )
    .unwrap();
    let (down, up) = (
        Tensor::ones((2, 32), candle_core::DType::F32, &Device::Cpu).unwrap(),
        Tensor::ones((32, 2), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(
        &std::collections::HashMap::from([
            (
                "lora_unet_down_blocks_0_no_such_layer.lora_down.weight".to_string(),
                down.clone(),
            ),
            (
                "lora_unet_down_blocks_0_no_such_layer.lora_up.weight".to_string(),
                up,
            ),
        ]),
        dir.join("stray.safetensors"),
    )
    .unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("model.diffusion_model.x.weight".to_string(), down)]),
        dir.join("notalora.safetensors"),
    )
    .unwrap();
    let fifo = base.join("outside.safetensors");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    std::os::unix::fs::symlink(&fifo, dir.join("escape.safetensors")).unwrap();
    (base, dir)
}

/// The fixture case `name` of `fixtures/lora/cases.json` as a job body with `loras`.
fn case_job(name: &str, loras: &str) -> String {
    let text = std::fs::read_to_string(fixtures().join("lora/cases.json")).unwrap();
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let case = cases.into_iter().find(|c| c["name"] == name).unwrap();
    serde_json::json!({
        "operation": "image_generation",
        "prompt": case["prompt"],
        "negative_prompt": case["negative_prompt"],
        "prompt_syntax": "plain",
        "steps": case["steps"],
        "guidance_scale": case["guidance_scale"],
        "width": case["width"],
        "height": case["height"],
        "seed": case["seed"],
        "loras": serde_json::from_str::<serde_json::Value>(loras).unwrap(),
    })
    .to_string()
}

/// Runs a job to completion and returns its base64 PNG.
fn run(url: &str, body: &str) -> String {
    let created = submit(url, body);
    let transcript = stream(url, &created.sse_url, &[]);
    assert_eq!(transcript.marker(), "[DONE]", "{transcript:?}");
    let Some(JobEvent::Complete(result)) = transcript.events().pop() else {
        panic!("{transcript:?}")
    };
    result.image
}

/// The largest channel difference between a PNG and diffusers' image `[1, 3, H, W]`.
fn max_pixel_difference(png_b64: &str, reference: &str) -> u8 {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(png_b64)
        .unwrap();
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut rgb = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut rgb).unwrap();
    rgb.truncate(info.buffer_size());
    let tensors = candle_core::safetensors::load(
        fixtures().join(format!("lora/{reference}.safetensors")),
        &Device::Cpu,
    )
    .unwrap();
    let image: &Tensor = &tensors["image"];
    let want: Vec<f32> = image
        .squeeze(0)
        .unwrap()
        .permute((1, 2, 0))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    rgb.iter()
        .zip(want)
        .map(|(a, b)| a.abs_diff((b.clamp(0.0, 1.0) * 255.0).round() as u8))
        .max()
        .unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn loras_by_name_match_diffusers_and_never_leak() {
    let (base, dir) = lora_dir("jobs");
    let model = fixtures().join("tiny-sd15");
    let worker = WorkerProcess::spawn(
        &[
            "--model",
            model.to_str().unwrap(),
            "--lora-dir",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    worker.wait_ready();

    let listed = get(&worker.url, "/v1/loras").value();
    let names: Vec<&str> = listed["loras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["kohya", "notalora", "stray", "styles/peft", "xl"],
        "{listed}"
    );
    assert_eq!(listed["loras"][0]["format"], "kohya");
    assert_eq!(
        listed["loras"][0]["targets"],
        serde_json::json!(["text_encoder", "unet"])
    );
    assert_eq!(listed["loras"][1]["format"], serde_json::Value::Null);
    assert_eq!(listed["loras"][4]["targets"].as_array().unwrap().len(), 3);
    assert_eq!(get(&worker.url, "/v1/info").value()["loras"]["count"], 5);
    let a1111 = get(&worker.url, "/sdapi/v1/loras").value();
    assert_eq!(a1111[3]["name"], "styles/peft");

    let plain = case_job("sd15_kohya_0.6", "[]");
    let fresh = run(&worker.url, &plain);
    assert!(max_pixel_difference(&fresh, "sd15_kohya_0.6.base") <= 2);
    let with_lora = run(
        &worker.url,
        &case_job("sd15_kohya_0.6", r#"[{"path":"kohya","strength":0.6}]"#),
    );
    let worst = max_pixel_difference(&with_lora, "sd15_kohya_0.6");
    assert!(worst <= 2, "the LoRA job differs from diffusers by {worst}");
    let two = run(
        &worker.url,
        &case_job(
            "sd15_two",
            r#"[{"path":"kohya.safetensors","strength":0.8},{"path":"styles/peft","strength":-0.7}]"#,
        ),
    );
    assert!(max_pixel_difference(&two, "sd15_two") <= 2);
    assert_eq!(
        run(&worker.url, &plain),
        fresh,
        "a LoRA leaked into the next job"
    );

    // Another family's LoRA: refused at submit, naming the field and the LoRA by name.
    let reply = post_json(
        &worker.url,
        "/v1/jobs",
        &case_job("sd15_kohya_1", r#"[{"path":"xl"}]"#),
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(
        reply.error(),
        ("invalid_request".into(), Some("loras[0].path".into()))
    );
    assert!(
        reply.body.contains(r#"\"xl\""#) && reply.body.contains("text_encoder_2"),
        "{}",
        reply.body
    );
    assert!(
        !reply.body.contains(dir.to_str().unwrap()),
        "{}",
        reply.body
    );
    // A LoRA whose header passes but whose key names no module of this
    // model: the job fails naming the field and the key.
    let created = submit(
        &worker.url,
        &case_job("sd15_kohya_1", r#"[{"path":"kohya"},{"path":"stray"}]"#),
    );
    let transcript = stream(&worker.url, &created.sse_url, &[]);
    let Some(JobEvent::Error(error)) = transcript.events().pop() else {
        panic!("{transcript:?}")
    };
    assert!(
        error.message.contains("\"stray\"") && error.message.contains("no_such_layer"),
        "{error:?}"
    );
    assert!(!error.message.contains(dir.to_str().unwrap()), "{error:?}");
    assert_eq!(run(&worker.url, &plain), fresh);

    std::fs::remove_dir_all(base).unwrap();
}

#[test]
fn names_outside_the_directory_are_refused_unopened() {
    let (base, dir) = lora_dir("refused");
    let model = fixtures().join("tiny-sd15");
    let worker = WorkerProcess::spawn(
        &[
            "--model",
            model.to_str().unwrap(),
            "--lora-dir",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    worker.wait_ready();
    let outside = base.join("outside.safetensors");
    for (loras, field, needle) in [
        (
            r#"[{"path":"missing"}]"#.to_string(),
            "loras[0].path",
            "no LoRA named",
        ),
        (
            r#"[{"path":"kohya"},{"path":"../outside"}]"#.to_string(),
            "loras[1].path",
            "without `..`",
        ),
        (
            r#"[{"path":"styles/../../outside"}]"#.to_string(),
            "loras[0].path",
            "without `..`",
        ),
        (
            format!(r#"[{{"path":"{}"}}]"#, outside.display()),
            "loras[0].path",
            "absolute",
        ),
        (
            r#"[{"path":"escape"}]"#.to_string(),
            "loras[0].path",
            "outside the LoRA directory",
        ),
        (
            r#"[{"path":"kohya","strength":4.5}]"#.to_string(),
            "loras[0].strength",
            "between -4 and 4",
        ),
        (
            r#"[{"path":"kohya"},{"path":"notalora"}]"#.to_string(),
            "loras[1].path",
            "is not a LoRA key",
        ),
        (
            r#"[{"path":"xl"}]"#.to_string(),
            "loras[0].path",
            "only SDXL models have",
        ),
    ] {
        let started = Instant::now();
        let reply = post_json(
            &worker.url,
            "/v1/jobs",
            &generation(&format!(r#","loras":{loras}"#)),
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(reply.status, 400, "{loras}: {}", reply.body);
        assert_eq!(
            reply.error(),
            ("invalid_request".into(), Some(field.into())),
            "{loras}"
        );
        assert!(reply.body.contains(needle), "{loras}: {}", reply.body);
    }
    // The other operations and the other APIs refuse at submit too.
    let picture = png_base64(64, 64);
    for (operation, pictures) in [
        (
            "image_transform",
            format!(r#""input_image":"{picture}","strength":0.5"#),
        ),
        (
            "image_inpaint",
            format!(r#""init_image":"{picture}","mask_image":"{picture}""#),
        ),
    ] {
        let body = format!(
            r#"{{"operation":"{operation}","prompt":"a cat",{pictures},"loras":[{{"path":"missing"}}]}}"#
        );
        let reply = post_json(&worker.url, "/v1/jobs", &body);
        assert_eq!(reply.status, 400, "{operation}: {}", reply.body);
        assert_eq!(
            reply.error(),
            ("invalid_request".into(), Some("loras[0].path".into())),
            "{operation}"
        );
        let tagged = format!(
            r#"{{"operation":"{operation}","prompt":"a cat <lora:../outside>",{pictures}}}"#
        );
        let reply = post_json(&worker.url, "/v1/jobs", &tagged);
        assert_eq!(reply.status, 400, "{operation}: {}", reply.body);
        assert_eq!(reply.error().1.as_deref(), Some("prompt"), "{operation}");
    }
    let reply = post_json(
        &worker.url,
        "/v1/images/generations",
        r#"{"prompt":"a cat <lora:missing:0.5>","size":"64x64"}"#,
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    let error = &reply.value()["error"];
    assert_eq!(error["param"], "prompt", "{}", reply.body);
    assert!(
        error["message"].as_str().unwrap().contains("no LoRA named"),
        "{}",
        reply.body
    );
    let reply = post_json(
        &worker.url,
        "/sdapi/v1/txt2img",
        r#"{"prompt":"a cat <lora:escape>","width":64,"height":64,"steps":1}"#,
    );
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert!(
        reply.body.contains("outside the LoRA directory"),
        "{}",
        reply.body
    );
    let jobs = get(&worker.url, "/v1/jobs").value();
    assert_eq!(
        jobs["jobs"],
        serde_json::json!([]),
        "a refused request left a job: {jobs}"
    );

    let listed = get(&worker.url, "/v1/loras").value();
    assert!(!listed.to_string().contains("escape"), "{listed}");
    std::fs::remove_dir_all(base).unwrap();
}

#[test]
fn memory_stays_flat_over_50_jobs_alternating_lora_sets() {
    let (base, dir) = lora_dir("memory");
    let model = fixtures().join("tiny-sd15");
    let worker = WorkerProcess::spawn(
        &[
            "--model",
            model.to_str().unwrap(),
            "--lora-dir",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    worker.wait_ready();
    let sets = [
        "[]",
        r#"[{"path":"kohya"}]"#,
        r#"[{"path":"styles/peft","strength":0.5}]"#,
        r#"[{"path":"kohya","strength":0.3},{"path":"styles/peft"}]"#,
    ];
    let job = |i: usize| {
        generation(&format!(
            r#","width":64,"height":64,"steps":1,"seed":{i},"loras":{}"#,
            sets[i % sets.len()]
        ))
    };
    let mut warm = 0;
    for i in 0..50 {
        run(&worker.url, &job(i));
        if i == 9 {
            warm = rss_kib(worker.child.id());
        }
    }
    let end = rss_kib(worker.child.id());
    eprintln!("RSS after 10 jobs {warm} KiB, after 50 {end} KiB");
    assert!(
        end < warm + 16 * 1024,
        "RSS grew from {warm} KiB to {end} KiB"
    );
    std::fs::remove_dir_all(base).unwrap();
}
