//! The AUTOMATIC1111 API subset (`/sdapi/v1/...`) on the fake engine: the
//! calls its clients make, bad input answered 4xx in A1111's shape (never
//! 500), progress and interrupt.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn txt2img(base: &str, body: Value) -> Resp {
    post_json(base, "/sdapi/v1/txt2img", &body.to_string())
}

fn img2img(base: &str, body: Value) -> Resp {
    post_json(base, "/sdapi/v1/img2img", &body.to_string())
}

/// The `info` string of a generation's answer, decoded.
fn info(resp: &Resp) -> Value {
    assert_eq!(resp.status, 200, "{}", resp.body);
    serde_json::from_str(resp.value()["info"].as_str().unwrap()).unwrap()
}

/// Asserts an A1111-shaped error of `status` whose detail mentions `needle`.
fn assert_a1111_error(resp: &Resp, status: u16, needle: &str) {
    assert_eq!(resp.status, status, "{}", resp.body);
    let body = resp.value();
    for key in ["error", "detail", "body", "errors"] {
        assert!(body[key].is_string(), "`{key}` missing in {body}");
    }
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains(needle), "`{needle}` not in `{detail}`");
}

#[test]
fn txt2img_makes_a_batch_with_consecutive_seeds() {
    let server = TestServer::ready(config());
    // What webuiapi sends, with many A1111 fields this worker ignores.
    let resp = txt2img(
        &server.url,
        json!({
            "enable_hr": false, "hr_scale": 2, "hr_upscaler": "Latent", "prompt": "a lighthouse",
            "styles": [], "seed": 5, "subseed": -1, "subseed_strength": 0.0, "batch_size": 2,
            "n_iter": 1, "steps": 2, "cfg_scale": 7.0, "width": 64, "height": 64,
            "restore_faces": false, "tiling": false, "negative_prompt": "", "eta": 1.0,
            "override_settings": {"CLIP_stop_at_last_layers": 1, "sd_model_checkpoint": "x"},
            "override_settings_restore_afterwards": true, "sampler_name": "Euler a",
            "scheduler": "automatic", "sampler_index": "Euler a", "script_name": null,
            "script_args": [], "send_images": true, "save_images": false, "alwayson_scripts": {}
        }),
    );
    let info = info(&resp);
    let body = resp.value();
    let images = body["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    for image in images {
        assert_eq!(png_size(image.as_str().unwrap()), (64, 64));
    }
    assert_eq!(info["all_seeds"], json!([5, 6]));
    assert_eq!(info["seed"], 5);
    assert_eq!(info["sampler_name"], "Euler a");
    assert_eq!(info["steps"], 2);
    assert_eq!(info["batch_size"], 2);
    assert_eq!(info["all_prompts"], json!(["a lighthouse", "a lighthouse"]));
    let texts = info["infotexts"].as_array().unwrap();
    assert_eq!(texts.len(), 2);
    assert_eq!(
        texts[1].as_str().unwrap(),
        png_parameters_text(images[1].as_str().unwrap())
    );
    assert!(texts[1].as_str().unwrap().contains("Seed: 6"));
    // The request echoed as sent.
    assert_eq!(body["parameters"]["hr_upscaler"], "Latent");
    assert_eq!(body["parameters"]["seed"], 5);
}

#[test]
fn clip_stop_at_last_layers_sets_the_jobs_clip_skip() {
    let server = TestServer::ready(config());
    let resp = txt2img(
        &server.url,
        json!({"prompt": "x", "seed": 1, "steps": 1, "width": 64, "height": 64,
            "override_settings": {"CLIP_stop_at_last_layers": 2}}),
    );
    let info = info(&resp);
    assert_eq!(info["clip_skip"], 2);
    // The job ran with clip_skip 1 (A1111's 2 is diffusers' 1), which its PNG
    // writes back in A1111's count.
    let text = info["infotexts"][0].as_str().unwrap();
    assert!(text.ends_with(", Clip skip: 2"), "{text}");
    // Clip skip 1 (A1111's default) skips nothing and is not written.
    let resp = txt2img(
        &server.url,
        json!({"prompt": "x", "seed": 1, "steps": 1, "width": 64, "height": 64,
            "override_settings": {"CLIP_stop_at_last_layers": 1}}),
    );
    let info = info_of(&resp);
    assert_eq!(info["clip_skip"], 1);
    assert!(!info["infotexts"][0].as_str().unwrap().contains("Clip skip"));
}

#[test]
fn batches_and_iterations_multiply_and_a_karras_schedule_combines() {
    let server = TestServer::ready(config());
    let resp = txt2img(
        &server.url,
        json!({"prompt": "x", "seed": 10, "batch_size": 2, "n_iter": 2, "steps": 1,
            "width": 64, "height": 64, "sampler_name": "DPM++ 2M", "scheduler": "Karras"}),
    );
    let info = info(&resp);
    assert_eq!(info["all_seeds"], json!([10, 11, 12, 13]));
    assert_eq!(info["sampler_name"], "DPM++ 2M Karras");
    // -1 draws a seed.
    let resp = txt2img(
        &server.url,
        json!({"prompt": "x", "seed": -1, "steps": 1, "width": 64, "height": 64,
            "sampler_name": "", "scheduler": ""}),
    );
    assert_eq!(info_of(&resp)["all_seeds"].as_array().unwrap().len(), 1);
}

fn info_of(resp: &Resp) -> Value {
    info(resp)
}

#[test]
fn img2img_takes_data_urls_and_a_mask_inpaints() {
    let server = TestServer::ready(config());
    let picture = format!("data:image/png;base64,{}", png_base64(96, 80));
    let resp = img2img(
        &server.url,
        json!({"init_images": [picture], "prompt": "a cat", "denoising_strength": 0.5,
            "steps": 4, "width": 64, "height": 64, "seed": 3, "resize_mode": 0}),
    );
    let info = info(&resp);
    let body = resp.value();
    assert_eq!(png_size(body["images"][0].as_str().unwrap()), (64, 64));
    assert_eq!(info["denoising_strength"], 0.5);
    assert_eq!(body["parameters"]["init_images"], Value::Null);
    let mask = png_base64(64, 64);
    let resp = img2img(
        &server.url,
        json!({"init_images": [png_base64(64, 64)], "mask": mask, "prompt": "a cat",
            "inpainting_fill": 0, "inpainting_mask_invert": 0, "steps": 2}),
    );
    assert_eq!(info_of(&resp)["denoising_strength"], 0.75);
}

#[test]
fn bad_input_is_a_422_in_a1111_shape() {
    let server = TestServer::ready(config());
    let base = json!({"prompt": "x", "steps": 1, "width": 64, "height": 64});
    let with = |field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        body
    };
    for (body, needle) in [
        (with("sampler_name", json!("Heun")), "known: Euler a, Euler"),
        (
            with("sampler_name", json!("Euler a ")),
            "known: Euler a, Euler",
        ),
        (with("sampler_index", json!("Heun")), "sampler_index"),
        (
            json!({"prompt": "x", "sampler_name": "Euler", "sampler_index": "Heun"}),
            "sampler_index",
        ),
        (with("scheduler", json!("Exponential")), "automatic, karras"),
        (with("steps", json!(0)), "steps"),
        (with("cfg_scale", json!(99)), "cfg_scale"),
        (with("width", json!(65)), "width"),
        (with("seed", json!(-5)), "seed"),
        (with("seed", json!("5")), "seed"),
        (with("batch_size", json!(1.5)), "batch_size"),
        (with("batch_size", json!(9)), "between 1 and 8"),
        (with("n_iter", json!(0)), "n_iter"),
        (with("n_iter", json!(17)), "between 1 and 16"),
        (with("prompt", json!("  ")), "prompt"),
        (
            with("override_settings", json!({"CLIP_stop_at_last_layers": 0})),
            "CLIP_stop_at_last_layers",
        ),
        (
            with("override_settings", json!({"CLIP_stop_at_last_layers": 13})),
            "between 1 and 12",
        ),
        (json!({"steps": 1}), "prompt"),
    ] {
        let resp = txt2img(&server.url, body.clone());
        assert_a1111_error(&resp, 422, needle);
    }
    let resp = post_json(&server.url, "/sdapi/v1/txt2img", "{not json");
    assert_a1111_error(&resp, 422, "JSON");
    let resp = post_json(&server.url, "/sdapi/v1/txt2img", "[1]");
    assert_a1111_error(&resp, 422, "object");
    let picture = png_base64(64, 64);
    for (body, needle) in [
        (json!({"prompt": "x", "init_images": []}), "init_images"),
        (
            json!({"prompt": "x", "init_images": [picture, picture]}),
            "exactly one",
        ),
        (
            json!({"prompt": "x", "init_images": ["bm90IGEgcGljdHVyZQ=="]}),
            "init_images",
        ),
        (
            json!({"prompt": "x", "init_images": [picture], "mask": "%%%"}),
            "mask",
        ),
        (
            json!({"prompt": "x", "init_images": [picture], "denoising_strength": 0}),
            "denoising_strength",
        ),
        (
            json!({"prompt": "x", "init_images": [picture], "inpainting_mask_invert": 1}),
            "inpainting_mask_invert",
        ),
        (json!({"prompt": "x"}), "init_images"),
    ] {
        let resp = img2img(&server.url, body);
        assert_a1111_error(&resp, 422, needle);
    }
    let resp = post_json(
        &server.url,
        "/sdapi/v1/options",
        r#"{"sd_model_checkpoint":"another"}"#,
    );
    assert_a1111_error(&resp, 422, "another");
    let resp = request(
        "POST",
        &server.url,
        "/sdapi/v1/txt2img",
        &[("content-type", "text/plain")],
        Some(r#"{"prompt":"x"}"#),
    );
    assert_a1111_error(&resp, 415, "JSON");
    assert_eq!(server.state.jobs().len(), 0, "nothing was queued");
}

#[test]
fn the_lists_clients_read_at_connect() {
    let server = TestServer::ready(config());
    let models = get(&server.url, "/sdapi/v1/sd-models").value();
    assert_eq!(models[0]["title"], "fake/model");
    assert_eq!(models[0]["model_name"], "fake/model");
    let options = get(&server.url, "/sdapi/v1/options").value();
    assert_eq!(options["sd_model_checkpoint"], "fake/model");
    assert_eq!(options["CLIP_stop_at_last_layers"], 1);
    assert_eq!(options["samples_format"], "png");
    let samplers = get(&server.url, "/sdapi/v1/samplers").value();
    let names: Vec<&str> = samplers
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"Euler a") && names.contains(&"DPM++ 2M Karras"));
    let schedulers = get(&server.url, "/sdapi/v1/schedulers").value();
    assert_eq!(schedulers[1]["label"], "Karras");
    for path in ["loras", "upscalers", "latent-upscale-modes", "sd-vae"] {
        assert_eq!(
            get(&server.url, &format!("/sdapi/v1/{path}")).value(),
            json!([])
        );
    }
    assert_eq!(
        get(&server.url, "/sdapi/v1/scripts").value(),
        json!({"txt2img": [], "img2img": []})
    );
    let set = post_json(
        &server.url,
        "/sdapi/v1/options",
        r#"{"sd_model_checkpoint":"fake/model","sd_vae":"Automatic"}"#,
    );
    assert_eq!(set.status, 200, "{}", set.body);
    let progress = get(&server.url, "/sdapi/v1/progress").value();
    assert_eq!(progress["progress"], 0.0);
    assert_eq!(progress["state"]["job_count"], 0);
}

#[test]
fn progress_shows_the_running_job_and_interrupt_ends_the_call() {
    let server = TestServer::start(config(), fake("step_ms=100"));
    server.wait_ready();
    let url = server.url.clone();
    let call = std::thread::spawn(move || {
        txt2img(
            &url,
            json!({"prompt": "x", "steps": 100, "width": 64, "height": 64, "n_iter": 3}),
        )
    });
    let mut seen = json!(null);
    wait_until(Duration::from_secs(10), || {
        seen = get(&server.url, "/sdapi/v1/progress").value();
        let p = seen["progress"].as_f64().unwrap();
        p > 0.0 && p < 1.0 && !seen["current_image"].is_null()
    });
    // The three iterations are one job of three images.
    assert_eq!(seen["state"]["job_count"], 1, "{seen}");
    assert!(seen["state"]["sampling_step"].as_u64().unwrap() >= 1);
    assert!(seen["eta_relative"].as_f64().unwrap() > 0.0);
    let preview = seen["current_image"].as_str().unwrap();
    assert!(png_size(preview).0 > 0);
    let resp = post_json(&server.url, "/sdapi/v1/interrupt", "");
    assert_eq!(resp.status, 200, "{}", resp.body);
    let resp = call.join().unwrap();
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.value()["images"], json!([]));
    wait_until(Duration::from_secs(5), || {
        server.state.jobs().unfinished().is_empty()
    });
    let progress = get(&server.url, "/sdapi/v1/progress").value();
    assert_eq!(progress["state"]["job_count"], 0);
}

#[test]
fn skip_cancels_the_running_batch_and_the_call_goes_on_with_the_next() {
    let server = TestServer::start(config(), fake("step_ms=100"));
    server.wait_ready();
    let url = server.url.clone();
    // 16 images: two jobs of eight, seeds 100..=107 and 108..=115.
    let call = std::thread::spawn(move || {
        txt2img(
            &url,
            json!({"prompt": "x", "seed": 100, "steps": 2, "width": 64, "height": 64,
                "batch_size": 8, "n_iter": 2}),
        )
    });
    wait_until(Duration::from_secs(10), || {
        get(&server.url, "/sdapi/v1/progress").value()["progress"]
            .as_f64()
            .unwrap()
            > 0.0
    });
    let jobs = server.state.jobs().unfinished();
    assert_eq!(jobs.len(), 2);
    let resp = post_json(&server.url, "/sdapi/v1/skip", "");
    assert_eq!(resp.status, 200, "{}", resp.body);
    let resp = call.join().unwrap();
    assert_eq!(resp.status, 200, "{}", resp.body);
    let info = info_of(&resp);
    let expected: Vec<u64> = (108..116).collect();
    assert_eq!(info["all_seeds"], json!(expected), "{info}");
    assert_eq!(resp.value()["images"].as_array().unwrap().len(), 8);
    let states: Vec<_> = jobs.iter().map(|job| job.state()).collect();
    assert!(
        states.contains(&sd_contract::JobState::Cancelled),
        "{states:?}"
    );
    assert!(
        states.contains(&sd_contract::JobState::Completed),
        "{states:?}"
    );
}

#[test]
fn the_routes_need_the_api_key() {
    let mut config = config();
    config.api_key = Some("secret".into());
    let server = TestServer::ready(config);
    let resp = get(&server.url, "/sdapi/v1/sd-models");
    assert_eq!(resp.status, 401);
    let resp = request(
        "GET",
        &server.url,
        "/sdapi/v1/sd-models",
        &[("authorization", "Bearer secret")],
        None,
    );
    assert_eq!(resp.status, 200);
    // Open WebUI's `user:password` credentials, as HTTP Basic auth.
    for (credentials, status) in [("webui:secret", 200), ("webui:wrong", 401)] {
        use base64::Engine as _;
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        );
        let resp = request(
            "GET",
            &server.url,
            "/sdapi/v1/sd-models",
            &[("authorization", basic.as_str())],
            None,
        );
        assert_eq!(resp.status, status, "{credentials}");
    }
}

#[test]
fn a_body_over_the_limit_is_a_413_in_the_workers_format() {
    let mut config = config();
    config.max_body_bytes = 1024;
    let server = TestServer::ready(config);
    let resp = txt2img(&server.url, json!({"prompt": "x".repeat(2000)}));
    assert_eq!(resp.status, 413, "{}", resp.body);
    assert_eq!(resp.value()["error"]["code"], "payload_too_large");
}

#[test]
fn the_openapi_document_covers_every_a1111_route() {
    use utoipa::OpenApi;
    let doc = serde_json::to_value(sd_worker::routes::openapi::ApiDoc::openapi()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("txt2img", "post"),
        ("img2img", "post"),
        ("progress", "get"),
        ("interrupt", "post"),
        ("skip", "post"),
        ("options", "get"),
        ("options", "post"),
        ("sd-models", "get"),
        ("samplers", "get"),
        ("schedulers", "get"),
        ("loras", "get"),
        ("upscalers", "get"),
        ("latent-upscale-modes", "get"),
        ("sd-vae", "get"),
        ("embeddings", "get"),
        ("scripts", "get"),
    ] {
        let path = format!("/sdapi/v1/{path}");
        assert!(paths[&path][method].is_object(), "{method} {path} missing");
    }
    let sdapi = paths.keys().filter(|p| p.starts_with("/sdapi/")).count();
    assert_eq!(sdapi, 15, "a route not listed here");
}
