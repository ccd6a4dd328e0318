//! The built binary on the tiny models of `fixtures/`: one job per family
//! through the HTTP API, its PNG compared with diffusers' image for the same
//! request (`fixtures/traces`), and cancellation of a real running job.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_core::Device;
use common::*;
use sd_contract::{JobEvent, JobStatus};
use serde::Deserialize;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    prompt: String,
    negative_prompt: Option<String>,
    steps: u32,
    guidance_scale: f64,
    width: u32,
    height: u32,
    seed: u64,
    scheduler: Option<String>,
    init_latents: bool,
    /// The Turbo cases' scheduler config, replacing the base folder's.
    scheduler_config: Option<serde_json::Value>,
}

/// The first trace case of `traces` that starts from seeded noise.
fn first_case(traces: &Path) -> Case {
    let text = std::fs::read_to_string(traces.join("cases.json")).unwrap();
    let cases: Vec<Case> = serde_json::from_str(&text).unwrap();
    cases.into_iter().find(|c| !c.init_latents).unwrap()
}

/// diffusers' image of `case` as 8-bit RGB.
fn reference_rgb(traces: &Path, case: &str) -> Vec<u8> {
    let tensors =
        candle_core::safetensors::load(traces.join(format!("{case}.safetensors")), &Device::Cpu)
            .unwrap();
    tensor_rgb8(&tensors["image"])
}

/// Decodes the PNG `image`, checks its size and returns its largest channel
/// difference from diffusers' image for trace case `case`.
fn max_pixel_difference(image: &str, size: (u32, u32), traces: &Path, case: &str) -> u8 {
    let (width, height, ours) = decode_png(image);
    assert_eq!((width, height), size);
    let reference = reference_rgb(traces, case);
    ours.iter()
        .zip(&reference)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap()
}

/// Serves `model`, runs its first trace case over HTTP and compares pixels.
fn check_family(model: &str, family: &str) {
    check_traces(&fixtures().join(model), model, model, family);
}

/// A distilled (Turbo) model folder: the base fixture's components with the
/// scheduler config of the first case of `traces` (as the public Turbo repos
/// ship the base architecture with their own scheduler).
fn turbo_folder(base: &str, traces: &str) -> PathBuf {
    let case = first_case(&fixtures().join("traces").join(traces));
    let config = case
        .scheduler_config
        .expect("Turbo cases carry a scheduler config");
    let folder = std::env::temp_dir().join(format!("sd-worker-{traces}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(folder.join("scheduler")).unwrap();
    for entry in std::fs::read_dir(fixtures().join(base)).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "scheduler" {
            std::os::unix::fs::symlink(entry.path(), folder.join(entry.file_name())).unwrap();
        }
    }
    std::fs::write(
        folder.join("scheduler/scheduler_config.json"),
        serde_json::to_string_pretty(&config).unwrap(),
    )
    .unwrap();
    folder
}

/// Serves `folder`, runs the first trace case of `traces_dir` over HTTP and compares pixels.
fn check_traces(folder: &Path, model: &str, traces_dir: &str, family: &str) {
    check_traces_with(folder, model, traces_dir, family, "f32", 2);
}

/// [`check_traces`] with the weights stored in `dtype`, allowing pixels to
/// differ from diffusers' by up to `max_pixel`.
fn check_traces_with(
    folder: &Path,
    model: &str,
    traces_dir: &str,
    family: &str,
    dtype: &str,
    max_pixel: u8,
) {
    let traces = fixtures().join("traces").join(traces_dir);
    let case = first_case(&traces);
    let worker = WorkerProcess::spawn(
        &["--model", folder.to_str().unwrap(), "--dtype", dtype],
        &[],
    );
    worker.wait_ready();
    let info = get(&worker.url, "/v1/info").value();
    assert_eq!(info["family"], family);
    assert_eq!(info["dtype"], dtype);

    let request = serde_json::json!({
        "operation": "image_generation",
        "hive_id": "localhost",
        "model": model,
        "prompt": case.prompt,
        "negative_prompt": case.negative_prompt,
        "prompt_syntax": "plain",
        "steps": case.steps,
        "guidance_scale": case.guidance_scale,
        "width": case.width,
        "height": case.height,
        "seed": case.seed,
        "scheduler": case.scheduler,
        "loras": [],
        "worker_id": null,
    });
    let created = submit(&worker.url, &request.to_string());
    let transcript = stream(&worker.url, &created.sse_url, &[]);
    assert_eq!(transcript.marker(), "[DONE]", "{model}: {transcript:?}");
    assert_eq!(transcript.terminal_count(), 1);
    assert!(
        transcript
            .types()
            .iter()
            .filter(|t| *t == "progress")
            .count()
            >= case.steps as usize
    );
    let Some(JobEvent::Complete(result)) = transcript.events().pop() else {
        panic!()
    };
    assert_eq!(
        (result.width, result.height, result.seed),
        (case.width, case.height, case.seed)
    );

    let worst = max_pixel_difference(
        &result.image,
        (case.width, case.height),
        &traces,
        &case.name,
    );
    assert!(
        worst <= max_pixel,
        "{model}/{}: max pixel difference {worst} > {max_pixel}",
        case.name
    );
}

/// bf16 weights (computed in f32) stay within a few levels of diffusers' f32
/// image: the tiny SD1.5 image differs by 3.6e-3 of full scale (about one level).
#[test]
fn sd1_with_bf16_weights_over_http_stays_close_to_diffusers() {
    let model = "tiny-sd15";
    check_traces_with(&fixtures().join(model), model, model, "sd1", "bf16", 4);
}

#[test]
fn sd1_over_http_gives_diffusers_image() {
    check_family("tiny-sd15", "sd1");
}

#[test]
fn sd2_over_http_gives_diffusers_image() {
    check_family("tiny-sd2", "sd2");
}

#[test]
fn sdxl_over_http_gives_diffusers_image() {
    check_family("tiny-sdxl", "sdxl");
}

#[test]
fn sd_turbo_over_http_gives_diffusers_image() {
    let folder = turbo_folder("tiny-sd2", "tiny-sd-turbo");
    check_traces(&folder, "tiny-sd-turbo", "tiny-sd-turbo", "sd2");
    std::fs::remove_dir_all(folder).unwrap();
}

#[test]
fn sdxl_turbo_over_http_gives_diffusers_image() {
    let folder = turbo_folder("tiny-sdxl", "tiny-sdxl-turbo");
    check_traces(&folder, "tiny-sdxl-turbo", "tiny-sdxl-turbo", "sdxl");
    std::fs::remove_dir_all(folder).unwrap();
}

/// A1111's syntax is the default: emphasis changes the image, a prompt longer
/// than one CLIP window is kept whole (on SD 1.5 and on SDXL's two encoders),
/// and `plain` reads the brackets as text.
#[test]
fn a1111_prompts_run_end_to_end() {
    for model in ["tiny-sd15", "tiny-sdxl"] {
        let folder = fixtures().join(model);
        let worker = WorkerProcess::spawn(&["--model", folder.to_str().unwrap()], &[]);
        worker.wait_ready();
        let run = |prompt: &str, syntax: Option<&str>| {
            let body = serde_json::json!({
                "operation": "image_generation", "prompt": prompt, "prompt_syntax": syntax,
                "negative_prompt": "blurry", "width": 64, "height": 64, "steps": 2, "seed": 5,
            });
            let created = submit(&worker.url, &body.to_string());
            let events = stream(&worker.url, &created.sse_url, &[]).events();
            let Some(JobEvent::Complete(result)) = events.last() else {
                panic!("{model}: no image: {events:?}")
            };
            let status: JobStatus =
                get(&worker.url, &format!("/v1/jobs/{}", created.job_id)).json();
            (result.image.clone(), status.params.prompt_syntax)
        };
        let (plain_words, syntax) = run("a red lighthouse", None);
        assert_eq!(syntax, sd_contract::PromptSyntax::A1111);
        let (weighted, _) = run("a (red:1.6) lighthouse", None);
        let (as_text, syntax) = run("a (red:1.6) lighthouse", Some("plain"));
        assert_eq!(syntax, sd_contract::PromptSyntax::Plain);
        assert_ne!(
            weighted, plain_words,
            "{model}: emphasis must change the image"
        );
        assert_ne!(
            weighted, as_text,
            "{model}: plain reads the brackets as text"
        );
        let words = ["a lighthouse on a cliff", "stormy sea", "gulls"];
        let long: Vec<&str> = words.iter().cycle().take(60).copied().collect();
        let long = long.join(", ");
        let (full, _) = run(&long, None);
        let (cut, _) = run(&long, Some("plain"));
        assert_ne!(
            full, cut,
            "{model}: the tokens after the first window must count"
        );
    }
}

/// `clip_skip` changes the image on SD 1.5 and SDXL, is reported back, is
/// written into the PNG as A1111's `Clip skip: N`, and is refused past the
/// model's encoders (the tiny ones have 3 layers) naming the field.
#[test]
fn clip_skip_runs_end_to_end() {
    for model in ["tiny-sd15", "tiny-sdxl"] {
        let folder = fixtures().join(model);
        let worker = WorkerProcess::spawn(&["--model", folder.to_str().unwrap()], &[]);
        worker.wait_ready();
        let body = |clip_skip: Option<u32>| {
            serde_json::json!({
                "operation": "image_generation", "prompt": "a red lighthouse",
                "negative_prompt": "blurry", "width": 64, "height": 64, "steps": 2, "seed": 5,
                "clip_skip": clip_skip,
            })
            .to_string()
        };
        let run = |clip_skip: Option<u32>| {
            let created = submit(&worker.url, &body(clip_skip));
            let events = stream(&worker.url, &created.sse_url, &[]).events();
            let Some(JobEvent::Complete(result)) = events.last() else {
                panic!("{model}: no image: {events:?}")
            };
            let status: JobStatus =
                get(&worker.url, &format!("/v1/jobs/{}", created.job_id)).json();
            (result.image.clone(), status.params.clip_skip)
        };
        let (absent, reported) = run(None);
        assert_eq!(reported, 0);
        let (zero, _) = run(Some(0));
        assert_eq!(absent, zero, "{model}: clip_skip 0 is the default");
        let (skipped, reported) = run(Some(1));
        assert_eq!(reported, 1);
        assert_ne!(skipped, zero, "{model}: clip_skip must change the image");
        let text = png_text(&skipped);
        assert!(text.ends_with(", Clip skip: 2"), "{model}: {text}");
        assert!(!png_text(&zero).contains("Clip skip"), "{model}");

        let refused = post_json(&worker.url, "/v1/jobs", &body(Some(3)));
        assert_eq!(refused.status, 400, "{model}");
        let error = &refused.value()["error"];
        assert_eq!(error["field"], "clip_skip", "{model}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains("at most 2"),
            "{model}: {error}"
        );
    }
}

/// The `parameters` text chunk of a base64 PNG.
fn png_text(b64: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let info = reader.info();
    info.uncompressed_latin1_text
        .iter()
        .find(|chunk| chunk.keyword == "parameters")
        .map(|chunk| chunk.text.clone())
        .unwrap()
}

#[test]
fn live_previews_on_the_real_model() {
    let folder = fixtures().join("tiny-sdxl");
    let worker = WorkerProcess::spawn(&["--model", folder.to_str().unwrap()], &[]);
    worker.wait_ready();
    let run = |preview: &str| {
        let body = format!(
            r#"{{"operation":"image_generation","prompt":"a lighthouse","width":96,"height":64,
                "steps":5,"seed":3,"scheduler":"euler","preview":{preview}}}"#
        );
        let created = submit(&worker.url, &body);
        let events = stream(&worker.url, &created.sse_url, &[]).events();
        let Some(JobEvent::Complete(result)) = events.last() else {
            panic!("no image: {events:?}")
        };
        (previews(&events), result.image.clone())
    };
    let (with, image) = run("true");
    assert_eq!(with.len(), 5);
    // Latents 12x8, enlarged 8 times; the first step always has room.
    let sizes: Vec<_> = with.iter().filter_map(|(_, size)| *size).collect();
    assert!(!sizes.is_empty(), "{with:?}");
    assert!(sizes.iter().all(|size| *size == (96, 64)), "{with:?}");
    assert_eq!(with[4], (5, None));
    let (without, same_image) = run("false");
    assert!(
        without.iter().all(|(_, size)| size.is_none()),
        "{without:?}"
    );
    assert_eq!(image, same_image, "a preview must not change the image");
}

/// A job of two images on the real model makes, bit for bit, the images of
/// two jobs of one with its seed and the next (an ancestral scheduler, so the
/// noise of every step follows the image's seed too).
#[test]
fn a_batch_on_the_real_model_equals_single_jobs_with_consecutive_seeds() {
    let folder = fixtures().join("tiny-sd15");
    let worker = WorkerProcess::spawn(&["--model", folder.to_str().unwrap()], &[]);
    worker.wait_ready();
    let run = |seed: u64, num_images: u32| {
        let body = generation(&format!(
            r#","width":64,"height":64,"steps":3,"scheduler":"euler_a","seed":{seed},"num_images":{num_images}"#
        ));
        let created = submit(&worker.url, &body);
        let events = stream(&worker.url, &created.sse_url, &[]).events();
        let Some(JobEvent::Complete(result)) = events.last() else {
            panic!("no image: {events:?}")
        };
        result.clone()
    };
    let batch = run(11, 2);
    let seeds: Vec<u64> = batch.images.iter().map(|i| i.seed).collect();
    assert_eq!(seeds, [11, 12]);
    let first = run(11, 1);
    let second = run(12, 1);
    assert!(first.images.is_empty());
    // A batch goes through the UNet together: its GEMMs may round the last
    // bits differently, so each image is within one 8-bit level of the
    // image a job of one makes with its seed (sd-core's batch tests bound it
    // the same way).
    let within_a_level = |batched: &str, alone: &str, which: &str| {
        let (batched, alone) = (decode_png(batched), decode_png(alone));
        assert_eq!((batched.0, batched.1), (alone.0, alone.1), "{which}");
        let diff = batched
            .2
            .iter()
            .zip(&alone.2)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(diff <= 1, "the {which} image differs by {diff} of 255");
    };
    within_a_level(&batch.image, &first.image, "first");
    assert_eq!(batch.images[0].image, batch.image);
    within_a_level(&batch.images[1].image, &second.image, "second");
    assert_ne!(first.image, second.image);
}

#[test]
fn a_running_real_job_is_cancelled_within_a_step() {
    let folder = fixtures().join("tiny-sd15");
    let worker = WorkerProcess::spawn(&["--model", folder.to_str().unwrap()], &[]);
    worker.wait_ready();
    let body = generation(r#","width":256,"height":256,"steps":150,"scheduler":"euler""#);
    let created = submit(&worker.url, &body);
    let path = format!("/v1/jobs/{}", created.job_id);
    wait_until(Duration::from_secs(30), || {
        get(&worker.url, &path).json::<JobStatus>().step.is_some()
    });
    let resp = delete(&worker.url, &path);
    assert!([200, 202].contains(&resp.status), "{}", resp.body);
    let transcript = stream(&worker.url, &created.sse_url, &[]);
    assert_eq!(transcript.marker(), "[CANCELLED]");
    let steps = transcript
        .types()
        .iter()
        .filter(|t| *t == "progress")
        .count();
    assert!(steps < 150, "the job ran to the end");
}

/// The job API on the real binary and model: a hive hears the worker, the key
/// guards the API, two clients and a late one see the same events, a queued
/// job is cancelled at once, and a full queue answers 503.
#[test]
fn the_job_api_on_the_real_model() {
    let hive_runtime = tokio::runtime::Runtime::new().unwrap();
    let (hive_url, hive) = start_hive(&hive_runtime, 0);
    let folder = fixtures().join("tiny-sd15");
    let worker = WorkerProcess::spawn(
        &[
            "--model",
            folder.to_str().unwrap(),
            "--worker-id",
            "tiny-1",
            "--callback-url",
            &hive_url,
            "--heartbeat-interval",
            "100ms",
            "--max-queue",
            "1",
            "--api-key",
            "k",
        ],
        &[],
    );
    worker.wait_ready();
    wait_until(Duration::from_secs(10), || {
        !hive.lock().unwrap().ready.is_empty()
    });
    assert_eq!(hive.lock().unwrap().ready[0].url, worker.url);
    assert_eq!(
        hive.lock().unwrap().ready[0].model_ref,
        folder.to_str().unwrap()
    );

    let auth = [
        ("authorization", "Bearer k"),
        ("content-type", "application/json"),
    ];
    let post = |body: &str| request("POST", &worker.url, "/v1/jobs", &auth, Some(body));
    assert_eq!(
        post_json(&worker.url, "/v1/jobs", &generation("")).status,
        401
    );

    let long = generation(r#","width":96,"height":96,"steps":30,"scheduler":"euler","seed":3"#);
    let running: sd_contract::JobCreated = post(&long).json();
    let status_path = format!("/v1/jobs/{}", running.job_id);
    wait_until(Duration::from_secs(30), || {
        let resp = request("GET", &worker.url, &status_path, &auth, None);
        resp.json::<JobStatus>().step.is_some()
    });
    let followers: Vec<_> = (0..2)
        .map(|_| {
            let (url, path) = (worker.url.clone(), running.sse_url.clone());
            std::thread::spawn(move || stream(&url, &path, &[("authorization", "Bearer k")]))
        })
        .collect();
    let queued: sd_contract::JobCreated =
        post(&generation(r#","width":64,"height":64,"steps":2"#)).json();
    let full = post(&generation(""));
    assert_eq!((full.status, full.error().0.as_str()), (503, "queue_full"));
    assert!(full.header("retry-after").is_some());
    let cancelled = request(
        "DELETE",
        &worker.url,
        &format!("/v1/jobs/{}", queued.job_id),
        &auth,
        None,
    );
    assert_eq!(cancelled.status, 200);
    let transcript = stream(
        &worker.url,
        &queued.sse_url,
        &[("authorization", "Bearer k")],
    );
    assert_eq!(transcript.types(), ["queued", "cancelled"]);

    let transcripts: Vec<_> = followers.into_iter().map(|f| f.join().unwrap()).collect();
    let late = stream(
        &worker.url,
        &running.sse_url,
        &[("authorization", "Bearer k")],
    );
    for t in transcripts.iter().chain([&late]) {
        assert_eq!(t.messages, late.messages);
        assert_eq!(t.marker(), "[DONE]");
    }
    let Some(JobEvent::Complete(result)) = late.events().pop() else {
        panic!()
    };
    assert_eq!(png_size(&result.image), (96, 96));
}

#[derive(Debug, Deserialize)]
struct ImageCase {
    name: String,
    operation: String,
    model: String,
    prompt: String,
    negative_prompt: Option<String>,
    steps: u32,
    guidance_scale: f64,
    strength: f64,
    seed: u64,
    scheduler: Option<String>,
    width: u32,
    height: u32,
    init_image: String,
    mask_image: Option<String>,
    steps_run: u32,
}

fn base64_file(path: &Path) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
}

/// Serves the case's model, sends the case's picture (and mask) over HTTP
/// without a size, and compares the PNG with diffusers' image.
fn check_image_case(traces: &str, case_name: &str) {
    let traces = fixtures().join("traces").join(traces);
    let text = std::fs::read_to_string(traces.join("cases.json")).unwrap();
    let cases: Vec<ImageCase> = serde_json::from_str(&text).unwrap();
    let case = cases.into_iter().find(|c| c.name == case_name).unwrap();
    let folder = fixtures().join(&case.model);
    let worker = WorkerProcess::spawn(&["--model", folder.to_str().unwrap()], &[]);
    worker.wait_ready();

    let mut request = serde_json::json!({
        "operation": if case.operation == "inpaint" { "image_inpaint" } else { "image_transform" },
        "prompt": case.prompt,
        "negative_prompt": case.negative_prompt,
        "prompt_syntax": "plain",
        "steps": case.steps,
        "guidance_scale": case.guidance_scale,
        "strength": case.strength,
        "seed": case.seed,
        "scheduler": case.scheduler,
    });
    let image = base64_file(&traces.join(&case.init_image));
    match &case.mask_image {
        Some(mask) => {
            request["init_image"] = image.into();
            request["mask_image"] = base64_file(&traces.join(mask)).into();
        }
        None => request["input_image"] = image.into(),
    }
    let created = submit(&worker.url, &request.to_string());
    let transcript = stream(&worker.url, &created.sse_url, &[]);
    assert_eq!(transcript.marker(), "[DONE]", "{case_name}: {transcript:?}");
    let events = transcript.events();
    let totals: Vec<(u32, u32)> = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Progress { step, total, .. } => Some((*step, *total)),
            _ => None,
        })
        .collect();
    // Progress counts the steps asked for at this strength, `floor(steps ·
    // strength)`, once per UNet pass (PNDM makes one pass more: a step twice).
    let asked = (f64::from(case.steps) * case.strength) as u32;
    let expected: Vec<(u32, u32)> = (1..=case.steps_run)
        .map(|pass| ((pass * asked).div_ceil(case.steps_run), asked))
        .collect();
    assert_eq!(totals, expected, "{case_name}: progress");
    let Some(JobEvent::Complete(result)) = events.last() else {
        panic!("{case_name}: no image")
    };
    let worst = max_pixel_difference(
        &result.image,
        (case.width, case.height),
        &traces,
        &case.name,
    );
    assert!(worst <= 2, "{case_name}: max pixel difference {worst} > 2");
}

#[test]
fn image_transform_over_http_gives_diffusers_image() {
    check_image_case("tiny-sd15-img2img", "i2i_ddim_s05_96x64");
}

#[test]
fn image_inpaint_over_http_gives_diffusers_image() {
    check_image_case("tiny-sd15-inpaint", "inp9_euler_a_s075_96x64");
    check_image_case("tiny-sdxl-img2img", "xl_inp4_euler_64");
}
