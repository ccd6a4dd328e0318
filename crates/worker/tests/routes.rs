//! Route tests with `oneshot`, no server and no engine thread: validation,
//! error bodies, auth, readiness, the queue bound and shutdown refusals.

mod common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use common::png_base64;
use sd_contract::{JobState, JobStatus, Readiness, ReadinessState, SchedulerKind};
use sd_core::model::{ModelFamily, ModelProfile};
use sd_core::schedulers::SchedulerKind as CoreScheduler;
use sd_worker::{app, AppState, WorkerConfig};
use serde_json::Value;
use tower::ServiceExt;

fn state(config: WorkerConfig) -> AppState {
    AppState::new(config, "127.0.0.1:9".parse().unwrap())
}

fn ready(config: WorkerConfig) -> AppState {
    let state = state(config);
    state.mark_ready(ModelProfile {
        family: ModelFamily::Sd1,
        inpainting: false,
        native_size: (512, 512),
        vae_scale_factor: 8,
        scheduler: CoreScheduler::Pndm,
        step_limits: Default::default(),
        max_clip_skip: 11,
        tiny_decoder: false,
        precision: Default::default(),
    });
    state
}

fn config() -> WorkerConfig {
    WorkerConfig::new("fake/model")
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Reply {
    fn error(&self) -> (&str, Option<&str>) {
        let e = &self.body["error"];
        assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            self.body
        );
        (e["code"].as_str().unwrap(), e["field"].as_str())
    }
}

async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{status}: body is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn post(body: impl Into<String>) -> Request<Body> {
    Request::post("/v1/jobs")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.into()))
        .unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn with_fields(fields: &str) -> String {
    format!(r#"{{"operation":"image_generation","prompt":"a cat"{fields}}}"#)
}

#[tokio::test]
async fn every_bad_input_is_a_400_naming_its_field() {
    let app = app(ready(config()));
    let cases: Vec<(String, &str, Option<&str>)> = vec![
        ("{not json".into(), "invalid_json", None),
        ("".into(), "invalid_json", None),
        ("[1]".into(), "invalid_json", None),
        (r#""text""#.into(), "invalid_json", None),
        (
            r#"{"prompt":"a cat"}"#.into(),
            "unknown_operation",
            Some("operation"),
        ),
        (
            r#"{"operation":"image_upscale","prompt":"a cat"}"#.into(),
            "unknown_operation",
            Some("operation"),
        ),
        (
            r#"{"operation":42,"prompt":"a cat"}"#.into(),
            "invalid_request",
            Some("operation"),
        ),
        (
            r#"{"operation":"image_generation"}"#.into(),
            "invalid_request",
            Some("prompt"),
        ),
        (
            r#"{"operation":"image_generation","prompt":""}"#.into(),
            "invalid_request",
            Some("prompt"),
        ),
        (
            r#"{"operation":"image_generation","prompt":" \n "}"#.into(),
            "invalid_request",
            Some("prompt"),
        ),
        (
            with_fields(r#","steps":0"#),
            "invalid_request",
            Some("steps"),
        ),
        (
            with_fields(r#","steps":151"#),
            "invalid_request",
            Some("steps"),
        ),
        (
            with_fields(r#","steps":-3"#),
            "invalid_request",
            Some("steps"),
        ),
        (
            with_fields(r#","steps":2.5"#),
            "invalid_request",
            Some("steps"),
        ),
        (
            with_fields(r#","steps":"ten""#),
            "invalid_request",
            Some("steps"),
        ),
        (
            with_fields(r#","guidance_scale":-0.1"#),
            "invalid_request",
            Some("guidance_scale"),
        ),
        (
            with_fields(r#","guidance_scale":30.5"#),
            "invalid_request",
            Some("guidance_scale"),
        ),
        (
            with_fields(r#","width":500"#),
            "invalid_request",
            Some("width"),
        ),
        (
            with_fields(r#","width":56"#),
            "invalid_request",
            Some("width"),
        ),
        (
            with_fields(r#","width":4096"#),
            "invalid_request",
            Some("width"),
        ),
        (
            with_fields(r#","height":513"#),
            "invalid_request",
            Some("height"),
        ),
        (
            with_fields(r#","scheduler":"lms""#),
            "invalid_request",
            Some("scheduler"),
        ),
        (
            with_fields(r#","seed":-1"#),
            "invalid_request",
            Some("seed"),
        ),
        (
            with_fields(r#","negative_prompt":5"#),
            "invalid_request",
            Some("negative_prompt"),
        ),
        (
            with_fields(r#","loras":[{"path":"x.safetensors","strength":0.5}]"#),
            "invalid_request",
            Some("loras"),
        ),
    ];
    for (body, code, field) in cases {
        let reply = send(&app, post(body.clone())).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.body
        );
        assert_eq!(reply.error(), (code, field), "{body}");
    }
}

/// A megabyte of prompt (one word, the tokenizer's worst case) is refused
/// by its length before any work, and queues nothing.
#[tokio::test]
async fn a_megabyte_prompt_is_refused_at_once() {
    let state = ready(config());
    let app = app(state.clone());
    let body = format!(
        r#"{{"operation":"image_generation","prompt":"{}"}}"#,
        "a".repeat(1 << 20)
    );
    let started = std::time::Instant::now();
    let reply = send(&app, post(body)).await;
    let took = started.elapsed();
    assert_eq!(reply.status, 400);
    assert_eq!(reply.error(), ("invalid_request", Some("prompt")));
    assert!(took < std::time::Duration::from_secs(2), "took {took:?}");
    assert_eq!(state.jobs().len(), 0);
}

#[tokio::test]
async fn rbee_bodies_with_nulls_are_accepted() {
    let app = app(ready(config()));
    let body = r#"{"operation":"image_generation","hive_id":"localhost","model":"stable-diffusion-v1-5",
        "prompt":"a cat","negative_prompt":null,"steps":null,"guidance_scale":null,"seed":null,
        "width":null,"height":null,"loras":[],"worker_id":null,"scheduler":null}"#;
    let reply = send(&app, post(body)).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let id = reply.body["job_id"].as_str().unwrap().to_string();
    assert_eq!(reply.body["sse_url"], format!("/v1/jobs/{id}/stream"));
    let status = send(&app, get(&format!("/v1/jobs/{id}"))).await;
    let status: JobStatus = serde_json::from_value(status.body).unwrap();
    assert_eq!(status.state, JobState::Queued);
    assert_eq!(status.queue_position, Some(1));
    assert_eq!((status.params.width, status.params.steps), (512, 25));
    assert_eq!(status.params.scheduler, SchedulerKind::Pndm);
}

fn transform_body(image: &str, fields: &str) -> String {
    format!(r#"{{"operation":"image_transform","prompt":"a cat","input_image":"{image}"{fields}}}"#)
}

fn inpaint_body(image: &str, mask: &str, fields: &str) -> String {
    format!(
        r#"{{"operation":"image_inpaint","prompt":"a cat","init_image":"{image}","mask_image":"{mask}"{fields}}}"#
    )
}

#[tokio::test]
async fn image_jobs_are_queued_with_the_picture_size() {
    let app = app(ready(config()));
    let photo = png_base64(140, 106);
    for (body, strength, (width, height)) in [
        (transform_body(&photo, ""), 0.8, (136, 104)),
        (
            transform_body(&photo, r#","strength":0.5,"width":64,"height":64"#)
                .replace("input_image", "init_image"),
            0.5,
            (64, 64),
        ),
        (inpaint_body(&photo, &photo, ""), 1.0, (136, 104)),
        (
            inpaint_body(&photo, &photo, r#","strength":0.6,"height":72"#),
            0.6,
            (136, 72),
        ),
    ] {
        let reply = send(&app, post(body)).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        let id = reply.body["job_id"].as_str().unwrap();
        let status = send(&app, get(&format!("/v1/jobs/{id}"))).await;
        let status: JobStatus = serde_json::from_value(status.body).unwrap();
        let p = status.params;
        assert_eq!(
            (p.width, p.height, p.strength),
            (width, height, Some(strength))
        );
    }
}

#[tokio::test]
async fn every_bad_image_input_is_a_400_naming_its_field() {
    let mut config = config();
    config.max_input_pixels = 200 * 200;
    let app = app(ready(config));
    let photo = png_base64(140, 106);
    let cases = [
        (transform_body("", ""), "input_image"),
        (transform_body("not base64!", ""), "input_image"),
        (transform_body("AAAA", ""), "input_image"),
        (transform_body(&png_base64(201, 200), ""), "input_image"),
        (transform_body(&png_base64(40, 40), ""), "input_image"),
        (transform_body(&photo, r#","strength":1.5"#), "strength"),
        (transform_body(&photo, r#","strength":-0.2"#), "strength"),
        (transform_body(&photo, r#","strength":0.01"#), "strength"),
        (transform_body(&photo, r#","width":100"#), "width"),
        (
            r#"{"operation":"image_transform","prompt":"a cat"}"#.to_string(),
            "input_image",
        ),
        (inpaint_body("AAAA", &photo, ""), "init_image"),
        (inpaint_body(&photo, "AAAA", ""), "mask_image"),
        (
            inpaint_body(&photo, &png_base64(136, 104), ""),
            "mask_image",
        ),
        (
            inpaint_body(&photo, &png_base64(201, 200), ""),
            "mask_image",
        ),
        (inpaint_body(&photo, &photo, r#","strength":2"#), "strength"),
        (
            r#"{"operation":"image_inpaint","prompt":"a cat","init_image":"AAAA"}"#.to_string(),
            "mask_image",
        ),
    ];
    for (body, field) in cases {
        let reply = send(&app, post(body.clone())).await;
        let shown = &body[..body.len().min(120)];
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{shown}: {}",
            reply.body
        );
        assert_eq!(reply.error(), ("invalid_request", Some(field)), "{shown}");
    }
}

#[tokio::test]
async fn an_inpainting_model_takes_only_inpainting_jobs() {
    let state = state(config());
    state.mark_ready(ModelProfile {
        family: ModelFamily::Sd1,
        inpainting: true,
        native_size: (512, 512),
        vae_scale_factor: 8,
        scheduler: CoreScheduler::Pndm,
        step_limits: Default::default(),
        max_clip_skip: 11,
        tiny_decoder: false,
        precision: Default::default(),
    });
    let app = app(state);
    let photo = png_base64(140, 106);
    for body in [with_fields(""), transform_body(&photo, "")] {
        let reply = send(&app, post(body.clone())).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
        assert_eq!(reply.error(), ("invalid_request", Some("mask_image")));
    }
    let reply = send(&app, post(inpaint_body(&photo, &photo, ""))).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
}

#[tokio::test]
async fn bodies_over_the_limit_or_not_json_are_refused() {
    let mut config = config();
    config.max_body_bytes = 256;
    let app = app(ready(config));
    let big = with_fields(&format!(r#","negative_prompt":"{}""#, "x".repeat(400)));
    let reply = send(&app, post(big)).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.error().0, "payload_too_large");
    assert!(reply.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("256"));

    let text = Request::post("/v1/jobs")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(with_fields("")))
        .unwrap();
    let reply = send(&app, text).await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(reply.error().0, "unsupported_media_type");

    // An HTML form of any site can post without a content type (or with
    // text/plain), but not as JSON.
    let untyped = Request::post("/v1/jobs")
        .body(Body::from(with_fields("")))
        .unwrap();
    let reply = send(&app, untyped).await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(reply.error().0, "unsupported_media_type");
    let charset = Request::post("/v1/jobs")
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::from(with_fields("")))
        .unwrap();
    assert_eq!(send(&app, charset).await.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn unknown_jobs_routes_and_methods_answer_json_errors() {
    let app = app(ready(config()));
    for request in [
        get("/v1/jobs/job-nope"),
        get("/v1/jobs/job-nope/stream"),
        Request::delete("/v1/jobs/job-nope")
            .body(Body::empty())
            .unwrap(),
        get("/v2/anything"),
    ] {
        let reply = send(&app, request).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.error().0, "not_found");
    }
    let put = Request::put("/v1/jobs").body(Body::empty()).unwrap();
    let reply = send(&app, put).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.error().0, "method_not_allowed");
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after_and_cancelling_frees_a_slot() {
    let mut config = config();
    config.max_queue = 2;
    let app = app(ready(config));
    let first = send(&app, post(with_fields(""))).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(
        send(&app, post(with_fields(""))).await.status,
        StatusCode::ACCEPTED
    );
    let full = send(&app, post(with_fields(""))).await;
    assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(full.error().0, "queue_full");
    let retry: u64 = full.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let info = send(&app, get("/v1/info")).await;
    assert_eq!(info.body["jobs"]["queued"], 2);
    assert_eq!(info.body["limits"]["max_queue"], 2);

    let id = first.body["job_id"].as_str().unwrap();
    let cancel = Request::delete(format!("/v1/jobs/{id}"))
        .body(Body::empty())
        .unwrap();
    let cancelled = send(&app, cancel).await;
    assert_eq!(cancelled.status, StatusCode::OK);
    assert_eq!(cancelled.body["state"], "cancelled");
    assert_eq!(
        send(&app, post(with_fields(""))).await.status,
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn the_api_key_guards_everything_but_health_and_ready() {
    let mut config = config();
    config.api_key = Some("s3cret".into());
    let app = app(ready(config));
    assert_eq!(send(&app, get("/health")).await.status, StatusCode::OK);
    assert_eq!(send(&app, get("/ready")).await.status, StatusCode::OK);
    let guarded = [
        ("GET", "/v1/info"),
        ("GET", "/openapi.json"),
        ("POST", "/v1/jobs"),
        ("GET", "/v1/jobs/job-x"),
        ("DELETE", "/v1/jobs/job-x"),
        ("GET", "/v1/jobs/job-x/stream"),
    ];
    for (method, path) in guarded {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("s3cret"),
            Some("Basic czNjcmV0"),
        ] {
            let mut request = Request::builder().method(method).uri(path);
            if let Some(auth) = auth {
                request = request.header(header::AUTHORIZATION, auth);
            }
            let reply = send(&app, request.body(Body::from(with_fields(""))).unwrap()).await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} {auth:?}"
            );
            assert_eq!(reply.error().0, "unauthorized");
            assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer");
        }
    }
    let authed = |request: axum::http::request::Builder, body: String| {
        request
            .header(header::AUTHORIZATION, "Bearer s3cret")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    let reply = send(&app, authed(Request::get("/v1/info"), String::new())).await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = send(&app, authed(Request::post("/v1/jobs"), with_fields(""))).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let id = reply.body["job_id"].as_str().unwrap().to_string();
    let lower = Request::get(format!("/v1/jobs/{id}"))
        .header(header::AUTHORIZATION, "bearer s3cret")
        .body(Body::empty())
        .unwrap();
    let reply = send(&app, lower).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[tokio::test]
async fn without_a_key_every_route_is_open() {
    let app = app(ready(config()));
    assert_eq!(send(&app, get("/v1/info")).await.status, StatusCode::OK);
    assert_eq!(
        send(&app, get("/openapi.json")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, post(with_fields(""))).await.status,
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn readiness_follows_the_model() {
    let loading = state(config());
    let app = app(loading.clone());
    assert_eq!(send(&app, get("/health")).await.body["status"], "ok");
    let reply = send(&app, get("/ready")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let body: Readiness = serde_json::from_value(reply.body).unwrap();
    assert_eq!((body.ready, body.state), (false, ReadinessState::Loading));
    assert!(body.reason.is_some());
    let refused = send(&app, post(with_fields(""))).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.error().0, "not_ready");
    assert!(refused.headers.contains_key(header::RETRY_AFTER));
    let info = send(&app, get("/v1/info")).await;
    assert_eq!(
        (info.body["ready"].clone(), info.body["defaults"].clone()),
        (Value::Bool(false), Value::Null)
    );

    loading.mark_ready(ModelProfile {
        family: ModelFamily::Sdxl,
        inpainting: false,
        native_size: (1024, 1024),
        vae_scale_factor: 8,
        scheduler: CoreScheduler::EulerA,
        step_limits: Default::default(),
        max_clip_skip: 11,
        tiny_decoder: false,
        precision: Default::default(),
    });
    let reply = send(&app, get("/ready")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body,
        serde_json::json!({"ready": true, "state": "ready", "reason": null})
    );
    let info = send(&app, get("/v1/info")).await;
    assert_eq!(info.body["family"], "sdxl");
    assert_eq!(info.body["defaults"]["width"], 1024);
    assert_eq!(info.body["defaults"]["steps"], 30);
    assert_eq!(info.body["defaults"]["scheduler"], "euler_a");

    let failed = state(config());
    failed.mark_failed("missing model file unet/config.json".into());
    let app = sd_worker::app(failed);
    let reply = send(&app, get("/ready")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body["state"], "failed");
    assert!(reply.body["reason"]
        .as_str()
        .unwrap()
        .contains("unet/config.json"));
    let refused = send(&app, post(with_fields(""))).await;
    assert_eq!(refused.error().0, "not_ready");
    assert!(!refused.headers.contains_key(header::RETRY_AFTER));
}

#[tokio::test]
async fn a_stopping_worker_refuses_jobs_and_cancels_the_waiting_ones() {
    let state = ready(config());
    let app = app(state.clone());
    let queued = send(&app, post(with_fields(""))).await;
    state.begin_shutdown();
    let refused = send(&app, post(with_fields(""))).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.error().0, "shutting_down");
    let reply = send(&app, get("/ready")).await;
    assert_eq!(
        (reply.status, reply.body["state"].clone()),
        (StatusCode::SERVICE_UNAVAILABLE, "stopping".into())
    );
    let id = queued.body["job_id"].as_str().unwrap();
    let status = send(&app, get(&format!("/v1/jobs/{id}"))).await;
    assert_eq!(status.body["state"], "cancelled");
}

fn get_with(path: &str, headers: &[(header::HeaderName, &str)]) -> Request<Body> {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(name, *value);
    }
    request.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn keys_of_any_length_are_checked() {
    let mut config = config();
    config.api_key = Some("a-rather-long-api-key-0123456789".into());
    let app = app(ready(config));
    for (token, status) in [
        ("a-rather-long-api-key-0123456789", StatusCode::OK),
        ("a", StatusCode::UNAUTHORIZED),
        ("a-rather-long-api-key-012345678", StatusCode::UNAUTHORIZED),
        (
            "a-rather-long-api-key-01234567890",
            StatusCode::UNAUTHORIZED,
        ),
        (&"k".repeat(2000), StatusCode::UNAUTHORIZED),
    ] {
        let auth = format!("Bearer {token}");
        let reply = send(
            &app,
            get_with("/v1/info", &[(header::AUTHORIZATION, &auth)]),
        )
        .await;
        assert_eq!(reply.status, status, "{} bytes", token.len());
    }
}

#[tokio::test]
async fn a_foreign_host_is_refused_and_ours_are_served() {
    let mut config = config();
    config.public_url = Some("https://sd.example.com".into());
    config.allowed_hosts = vec!["gpu-7.lan".into()];
    let app = app(ready(config));
    for host in [
        "evil.example",
        "evil.example:8080",
        "localhost.evil.example",
    ] {
        for path in ["/v1/info", "/ready", "/", "/v1/jobs/job-x"] {
            let reply = send(&app, get_with(path, &[(header::HOST, host)])).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{host} {path}");
            assert_eq!(reply.error().0, "forbidden");
        }
    }
    let health = send(&app, get_with("/health", &[(header::HOST, "evil.example")])).await;
    assert_eq!(health.status, StatusCode::OK);
    for host in [
        "127.0.0.1:8080",
        "192.168.1.20:8080",
        "[::1]:8080",
        "localhost:8080",
        "sd.example.com",
        "gpu-7.lan:8080",
    ] {
        let reply = send(&app, get_with("/v1/info", &[(header::HOST, host)])).await;
        assert_eq!(reply.status, StatusCode::OK, "{host}");
    }
    let mut open = WorkerConfig::new("fake/model");
    open.allowed_hosts = vec!["*".into()];
    let app = sd_worker::app(ready(open));
    let reply = send(
        &app,
        get_with("/v1/info", &[(header::HOST, "evil.example")]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn cross_origin_requests_are_refused_unless_allowed_and_then_get_cors_headers() {
    let app = app(ready(config()));
    let host = (header::HOST, "127.0.0.1:8080");
    let same = send(
        &app,
        get_with(
            "/v1/info",
            &[host.clone(), (header::ORIGIN, "http://127.0.0.1:8080")],
        ),
    )
    .await;
    assert_eq!(same.status, StatusCode::OK);
    for origin in ["https://evil.example", "http://127.0.0.1:9999", "null"] {
        let reply = send(
            &app,
            get_with("/v1/info", &[host.clone(), (header::ORIGIN, origin)]),
        )
        .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{origin}");
        assert_eq!(reply.error().0, "forbidden");
        assert!(!reply
            .headers
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    }
    let form = Request::post("/v1/jobs")
        .header(header::ORIGIN, "https://evil.example")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(with_fields("")))
        .unwrap();
    assert_eq!(send(&app, form).await.status, StatusCode::FORBIDDEN);

    let mut config = config();
    config.allowed_origins = vec!["https://app.example.com".into()];
    let app = sd_worker::app(ready(config));
    let origin = (header::ORIGIN, "https://app.example.com");
    let reply = send(&app, get_with("/v1/info", &[host.clone(), origin.clone()])).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example.com"
    );
    let preflight = Request::options("/v1/jobs")
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::ORIGIN, "https://app.example.com")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization,content-type",
        )
        .body(Body::empty())
        .unwrap();
    let reply = send(&app, preflight).await;
    assert!(reply.status.is_success(), "{}", reply.status);
    assert_eq!(
        reply.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example.com"
    );
    let allowed = reply.headers[header::ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .unwrap();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"));
    let other = send(
        &app,
        get_with(
            "/v1/info",
            &[host, (header::ORIGIN, "https://evil.example")],
        ),
    )
    .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_page_forbids_framing_and_has_a_content_security_policy() {
    let app = app(ready(config()));
    let page = get_with("/", &[(header::ACCEPT, "text/html")]);
    let response = app.clone().oneshot(page).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::X_FRAME_OPTIONS], "DENY");
    let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    for directive in [
        "default-src 'self'",
        "frame-ancestors 'none'",
        "img-src 'self' data: blob:",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
}

#[tokio::test]
async fn a_failed_load_shows_absolute_paths_only_to_key_holders() {
    let reason = "missing model file /home/alice/models/sd15/unet/config.json";
    let mut keyed = config();
    keyed.api_key = Some("s3cret".into());
    for config in [config(), keyed] {
        let failed = state(config.clone());
        failed.mark_failed(reason.into());
        let app = sd_worker::app(failed);
        let reply = send(&app, get("/ready")).await;
        assert_eq!(reply.body["state"], "failed");
        let shown = reply.body["reason"].as_str().unwrap();
        assert!(!shown.contains("/home/alice"), "{shown}");
        assert!(shown.contains("…/config.json"), "{shown}");
        let refused = send(&app, post(with_fields(""))).await;
        let message = refused.body["error"]["message"].as_str().unwrap();
        if config.api_key.is_none() {
            assert!(!message.contains("/home/alice"), "{message}");
        }
        let authed = get_with("/ready", &[(header::AUTHORIZATION, "Bearer s3cret")]);
        let reply = send(&app, authed).await;
        let shown = reply.body["reason"].as_str().unwrap();
        assert_eq!(
            shown.contains("/home/alice/models"),
            config.api_key.is_some(),
            "{shown}"
        );
    }
}

#[tokio::test]
async fn bad_job_ids_answer_json_errors() {
    let app = app(ready(config()));
    let long = format!("/v1/jobs/job-{}", "a".repeat(5000));
    for (method, path, status) in [
        ("GET", "/v1/jobs/%FF%FE", StatusCode::BAD_REQUEST),
        ("DELETE", "/v1/jobs/%FF%FE", StatusCode::BAD_REQUEST),
        ("GET", "/v1/jobs/%C3%28/stream", StatusCode::BAD_REQUEST),
        ("GET", "/v1/jobs/%00", StatusCode::NOT_FOUND),
        ("DELETE", "/v1/jobs/..%2F..%2Fetc", StatusCode::NOT_FOUND),
        ("GET", long.as_str(), StatusCode::NOT_FOUND),
        ("DELETE", long.as_str(), StatusCode::NOT_FOUND),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let reply = send(&app, request).await;
        let shown = &path[..path.len().min(40)];
        assert_eq!(reply.status, status, "{method} {shown}");
        let (code, field) = reply.error();
        if status == StatusCode::BAD_REQUEST {
            assert_eq!((code, field), ("invalid_request", Some("id")));
        } else {
            assert_eq!(code, "not_found");
        }
        assert!(reply.body["error"]["message"].as_str().unwrap().len() < 300);
    }
}

#[tokio::test]
async fn unknown_fields_are_named_in_a_warning_or_refused_when_strict() {
    let app = app(ready(config()));
    let body = with_fields(
        r#","hive_id":null,"model":"sd-1.5","worker_id":null,"loras":[],"sampler":"euler","cfg":7"#,
    );
    let reply = send(&app, post(body.clone())).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_eq!(
        reply.headers[header::WARNING],
        r#"299 sd-worker "unknown fields ignored: cfg, sampler""#
    );
    let known = with_fields(r#","hive_id":null,"model":"sd-1.5","seed":null,"preview":null"#);
    let reply = send(&app, post(known.clone())).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert!(!reply.headers.contains_key(header::WARNING));

    let mut strict = config();
    strict.strict = true;
    let app = sd_worker::app(ready(strict));
    let reply = send(&app, post(body)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error(), ("invalid_request", Some("cfg")));
    let lora = with_fields(r#","loras":[{"path":"x","scale":1}]"#);
    let reply = send(&app, post(lora)).await;
    assert_eq!(reply.error(), ("invalid_request", Some("loras[0].scale")));
    assert_eq!(send(&app, post(known)).await.status, StatusCode::ACCEPTED);
    let image = format!(
        r#"{{"operation":"image_transform","prompt":"x","init_image":"{}"}}"#,
        png_base64(64, 64)
    );
    assert_eq!(send(&app, post(image)).await.status, StatusCode::ACCEPTED);
}
