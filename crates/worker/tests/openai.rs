//! The OpenAI Images API (`/v1/images/generations`, `/v1/images/edits`,
//! `/v1/models`) on the fake engine: answers in OpenAI's shapes, images that
//! are ordinary jobs, and every bad input an OpenAI-shaped 4xx.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

const PATH: &str = "/v1/images/generations";
const EDITS: &str = "/v1/images/edits";

fn png_bytes(width: usize, height: usize) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(png_base64(width, height))
        .unwrap()
}

/// A `width`x`height` RGBA PNG, transparent in its left half when `hole`,
/// else opaque everywhere.
fn rgba_mask(width: u32, height: u32, hole: bool) -> Vec<u8> {
    let pixels: Vec<u8> = (0..width * height)
        .flat_map(|i| {
            let alpha = if hole && i % width < width / 2 {
                0
            } else {
                255
            };
            [0, 0, 0, alpha]
        })
        .collect();
    let mut png = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut png, width, height);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&pixels).unwrap();
    }
    png
}

/// A multipart form: text fields, then files.
fn form(text: &[(&str, &str)], files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "sd-worker-test-boundary";
    let mut body = Vec::new();
    for (name, value) in text {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    for (name, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.png\"\r\n\
                 Content-Type: image/png\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn post_form(base: &str, text: &[(&str, &str)], files: &[(&str, &[u8])]) -> Resp {
    let (content_type, body) = form(text, files);
    post_bytes(base, EDITS, &content_type, &[], &body)
}

/// The `(status, param)` of an OpenAI-shaped error, checking its shape.
fn openai_error(resp: &Resp) -> (u16, Option<String>) {
    let body = resp.value();
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    let kind = if resp.status >= 500 {
        "server_error"
    } else {
        "invalid_request_error"
    };
    assert_eq!(error["type"], kind, "{body}");
    assert!(error["code"].is_string(), "{body}");
    assert!(
        error["param"].is_string() || error["param"].is_null(),
        "{body}"
    );
    assert!(error.get("field").is_none(), "{body}");
    (resp.status, error["param"].as_str().map(str::to_string))
}

#[test]
fn generations_answer_n_images_of_one_job_with_consecutive_seeds() {
    let server = TestServer::ready(config());
    let resp = post_json(
        &server.url,
        PATH,
        r#"{"prompt":"a lighthouse","model":"dall-e-3","n":2,"size":"64x64",
            "response_format":"b64_json","quality":"hd","style":"vivid","user":"u",
            "seed":5,"steps":2,"guidance_scale":5,"scheduler":"euler","prompt_syntax":"plain"}"#,
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    let body = resp.value();
    assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(
        data[0]["job_id"], data[1]["job_id"],
        "one job of two images"
    );
    for (image, seed) in data.iter().zip([5, 6]) {
        assert_eq!(image["seed"], seed);
        assert!(image.get("url").is_none());
        assert_eq!(png_size(image["b64_json"].as_str().unwrap()), (64, 64));
        let job = get(
            &server.url,
            &format!("/v1/jobs/{}", image["job_id"].as_str().unwrap()),
        );
        assert_eq!(job.status, 200);
        let job = job.value();
        assert_eq!(job["state"], "completed");
        assert_eq!(job["params"]["steps"], 2);
        assert_eq!(job["params"]["scheduler"], "euler");
        assert_eq!(job["params"]["num_images"], 2);
    }
}

#[test]
fn the_url_format_is_a_data_url_and_sizes_default_to_the_workers() {
    let server = TestServer::ready(config());
    let resp = post_json(
        &server.url,
        PATH,
        r#"{"prompt":"a lighthouse","response_format":"url","size":"auto","steps":1}"#,
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    let image = &resp.value()["data"][0];
    assert!(image.get("b64_json").is_none());
    let url = image["url"].as_str().unwrap();
    let b64 = url.strip_prefix("data:image/png;base64,").unwrap();
    let info = get(&server.url, "/v1/info").value();
    let defaults = &info["defaults"];
    assert_eq!(
        png_size(b64),
        (
            defaults["width"].as_u64().unwrap() as u32,
            defaults["height"].as_u64().unwrap() as u32
        )
    );
}

#[test]
fn bad_generation_requests_are_openai_shaped_4xx_naming_the_param() {
    let server = TestServer::ready(config());
    let cases: &[(&str, u16, Option<&str>)] = &[
        (r#"{"prompt":"x","size":"65x64"}"#, 400, Some("size")),
        (r#"{"prompt":"x","size":"64x4096"}"#, 400, Some("size")),
        (r#"{"prompt":"x","size":"big"}"#, 400, Some("size")),
        (r#"{"prompt":"x","n":0}"#, 400, Some("n")),
        (r#"{"prompt":"x","n":9}"#, 400, Some("n")),
        (r#"{"prompt":"x","n":"two"}"#, 400, Some("n")),
        (
            r#"{"prompt":"x","response_format":"gif"}"#,
            400,
            Some("response_format"),
        ),
        (r#"{"prompt":"x","steps":0}"#, 400, Some("steps")),
        (
            r#"{"prompt":"x","guidance_scale":31}"#,
            400,
            Some("guidance_scale"),
        ),
        (
            r#"{"prompt":"x","scheduler":"lms"}"#,
            400,
            Some("scheduler"),
        ),
        (r#"{"prompt":"  "}"#, 400, Some("prompt")),
        (r#"{"n":1}"#, 400, Some("prompt")),
        (r#"["a cat"]"#, 400, None),
        ("{not json", 400, None),
    ];
    for (body, status, param) in cases {
        let resp = post_json(&server.url, PATH, body);
        assert_eq!(
            openai_error(&resp),
            (*status, param.map(str::to_string)),
            "{body}: {}",
            resp.body
        );
    }
    let resp = post_json(&server.url, PATH, r#"{"prompt":"x","size":"65x64"}"#);
    let message = resp.value()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("65x64") && message.contains("size"),
        "{message}"
    );
    // Not JSON, a wrong method, nothing queued by any of them.
    let resp = request(
        "POST",
        &server.url,
        PATH,
        &[("content-type", "text/plain")],
        Some("{}"),
    );
    assert_eq!(openai_error(&resp), (415, None));
    let resp = get(&server.url, PATH);
    assert_eq!(openai_error(&resp), (405, None));
    assert_eq!(server.state.jobs().len(), 0);
}

#[test]
fn the_api_key_guards_the_openai_routes_in_openai_shape() {
    let mut config = config();
    config.api_key = Some("sk-test".into());
    let server = TestServer::ready(config);
    for path in ["/v1/models", PATH, EDITS] {
        let method = if path == "/v1/models" { "GET" } else { "POST" };
        let resp = request(method, &server.url, path, &[], None);
        assert_eq!(openai_error(&resp), (401, None), "{path}");
        assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
    }
    let auth = [("authorization", "Bearer sk-test")];
    let models = request("GET", &server.url, "/v1/models", &auth, None);
    assert_eq!(models.status, 200);
}

#[test]
fn models_list_the_served_model() {
    let server = TestServer::ready(config());
    let resp = get(&server.url, "/v1/models");
    assert_eq!(resp.status, 200);
    let body = resp.value();
    assert_eq!(body["object"], "list");
    let model = &body["data"][0];
    assert_eq!(model["id"], "fake/model");
    assert_eq!(model["object"], "model");
    assert_eq!(model["owned_by"], "sd-worker");
    assert!(model["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
}

#[test]
fn an_edit_with_a_mask_inpaints_and_without_one_transforms() {
    let server = TestServer::ready(config());
    let image = png_bytes(64, 64);
    let mask = rgba_mask(64, 64, true);
    let text = [
        ("prompt", "a red door"),
        ("n", "2"),
        ("seed", "9"),
        ("steps", "2"),
        ("quality", "high"),
    ];
    let resp = post_form(&server.url, &text, &[("image", &image), ("mask", &mask)]);
    assert_eq!(resp.status, 200, "{}", resp.body);
    let data = resp.value()["data"].as_array().unwrap().clone();
    assert_eq!(data.len(), 2);
    assert_eq!(
        (data[0]["seed"].clone(), data[1]["seed"].clone()),
        (json!(9), json!(10))
    );
    let strength = |image: &Value| {
        let job = get(
            &server.url,
            &format!("/v1/jobs/{}", image["job_id"].as_str().unwrap()),
        );
        job.value()["params"]["strength"].as_f64().unwrap()
    };
    // Inpainting starts the masked area from noise (strength 1).
    assert_eq!(strength(&data[0]), 1.0);
    assert_eq!(png_size(data[0]["b64_json"].as_str().unwrap()), (64, 64));

    let text = [("prompt", "a red door"), ("size", "128x64"), ("steps", "4")];
    let resp = post_form(&server.url, &text, &[("image[]", &image)]);
    assert_eq!(resp.status, 200, "{}", resp.body);
    let image_out = &resp.value()["data"][0];
    assert_eq!(png_size(image_out["b64_json"].as_str().unwrap()), (128, 64));
    // Image-to-image at diffusers' default strength.
    assert_eq!(strength(image_out), 0.8);
}

#[test]
fn bad_edits_are_openai_shaped_4xx_naming_the_param() {
    let server = TestServer::ready(config());
    let image = png_bytes(64, 64);
    let opaque_rgb = png_bytes(64, 64);
    let prompt = [("prompt", "a red door")];
    let no_alpha = post_form(
        &server.url,
        &prompt,
        &[("image", &image), ("mask", &opaque_rgb)],
    );
    assert_eq!(openai_error(&no_alpha), (400, Some("mask".into())));
    let message = no_alpha.value()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("alpha") && message.contains("transparent"),
        "{message}"
    );
    type Case<'a> = (
        Vec<(&'a str, &'a str)>,
        Vec<(&'a str, &'a [u8])>,
        Option<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (prompt.to_vec(), vec![], Some("image")),
        (vec![], vec![("image", &image)], Some("prompt")),
        (
            prompt.to_vec(),
            vec![("image", b"not a picture")],
            Some("image"),
        ),
        (
            prompt.to_vec(),
            vec![("image", &image), ("mask", b"junk")],
            Some("mask"),
        ),
        (
            prompt.to_vec(),
            vec![("image", &image), ("image", &image)],
            Some("image"),
        ),
        (
            vec![("prompt", "x"), ("size", "60x64")],
            vec![("image", &image)],
            Some("size"),
        ),
        (
            vec![("prompt", "x"), ("n", "lots")],
            vec![("image", &image)],
            Some("n"),
        ),
        (
            vec![("prompt", "x"), ("strength", "0")],
            vec![("image", &image)],
            Some("strength"),
        ),
        (
            vec![("prompt", "x"), ("steps", "1"), ("strength", "0.5")],
            vec![("image", &image)],
            Some("strength"),
        ),
    ];
    for (text, files, param) in &cases {
        let resp = post_form(&server.url, text, files);
        assert_eq!(
            openai_error(&resp),
            (400, param.map(str::to_string)),
            "{text:?}: {}",
            resp.body
        );
    }
    let resp = post_json(&server.url, EDITS, r#"{"prompt":"x"}"#);
    assert_eq!(openai_error(&resp), (415, None));
    let resp = post_bytes(
        &server.url,
        EDITS,
        "multipart/form-data; boundary=x",
        &[],
        b"--x\r\nnot a part",
    );
    assert_eq!(openai_error(&resp), (400, None));
    assert_eq!(server.state.jobs().len(), 0);
}

#[test]
fn a_failed_job_is_a_server_error() {
    let server = TestServer::start(config(), fake("fail_prompt=boom"));
    server.wait_ready();
    let resp = post_json(
        &server.url,
        PATH,
        r#"{"prompt":"boom","steps":1,"size":"64x64"}"#,
    );
    assert_eq!(openai_error(&resp), (500, None), "{}", resp.body);
}

#[test]
fn a_job_cancelled_through_the_job_api_answers_499() {
    let server = TestServer::start(config(), fake("step_ms=60000"));
    server.wait_ready();
    let url = server.url.clone();
    let call = std::thread::spawn(move || {
        post_json(
            &url,
            PATH,
            r#"{"prompt":"a lighthouse","steps":2,"size":"64x64"}"#,
        )
    });
    wait_until(Duration::from_secs(5), || server.state.jobs().len() == 1);
    let id = server.state.jobs().unfinished()[0].id().to_string();
    let cancelled = delete(&server.url, &format!("/v1/jobs/{id}"));
    assert!([200, 202].contains(&cancelled.status), "{}", cancelled.body);
    let resp = call.join().unwrap();
    assert_eq!(openai_error(&resp), (499, None), "{}", resp.body);
    assert_eq!(resp.value()["error"]["code"], "cancelled");
}
