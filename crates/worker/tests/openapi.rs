//! The OpenAPI document: generated from the code, committed as
//! `openapi.json` at the repository root, and served at `/openapi.json`.
//!
//! After changing the API, refresh the committed copy with
//! `UPDATE_OPENAPI=1 cargo test -p sd-worker --test openapi`.
//!
//! The bounds the document publishes for each operation are checked against
//! what the worker's validator accepts, so neither can change alone; a bound
//! published on a field this test does not know fails it.

mod common;

use std::path::PathBuf;

use axum::body::Body;
use axum::http::Request;
use common::png_base64;
use sd_contract::ErrorCode;
use sd_core::model::{ModelFamily, ModelProfile};
use sd_worker::extract::parse_job_request;
use sd_worker::routes::openapi::ApiDoc;
use sd_worker::validation::validate;
use sd_worker::{app, AppState, WorkerConfig};
use serde_json::{json, Map, Value};
use tower::ServiceExt;
use utoipa::OpenApi;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../openapi.json")
}

fn generated() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap() + "\n"
}

#[test]
fn the_committed_document_matches_the_code() {
    let generated = generated();
    let path = committed_path();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date: run `UPDATE_OPENAPI=1 cargo test -p sd-worker --test openapi`",
        path.display()
    );
}

#[test]
fn the_document_is_openapi_3_1_and_covers_every_route() {
    let doc: Value = serde_json::from_str(&generated()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/jobs", "post"),
        ("/v1/jobs/{id}", "get"),
        ("/v1/jobs/{id}", "delete"),
        ("/v1/jobs/{id}/stream", "get"),
        ("/v1/info", "get"),
        ("/health", "get"),
        ("/ready", "get"),
        ("/openapi.json", "get"),
        ("/v1/images/generations", "post"),
        ("/v1/images/edits", "post"),
        ("/v1/models", "get"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path} missing");
    }
    let schemas = &doc["components"]["schemas"];
    let events = schemas["JobEvent"]["oneOf"].as_array().unwrap();
    assert_eq!(events.len(), 8);
    let operations = schemas["JobRequest"]["oneOf"].as_array().unwrap();
    assert_eq!(operations.len(), 3);
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn the_served_document_is_the_generated_one() {
    let state = AppState::new(
        WorkerConfig::new("fake/model"),
        "127.0.0.1:9".parse().unwrap(),
    );
    let response = app(state)
        .oneshot(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let served: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(served, serde_json::to_value(ApiDoc::openapi()).unwrap());
}

/// A worker with another `--max-size` states it as the sizes' maximum.
#[tokio::test]
async fn the_served_document_states_the_workers_size_limit() {
    let mut config = WorkerConfig::new("fake/model");
    config.max_size = 1024;
    let state = AppState::new(config, "127.0.0.1:9".parse().unwrap());
    let response = app(state)
        .oneshot(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let served: Value = serde_json::from_slice(&bytes).unwrap();
    let fields = &served["components"]["schemas"]["GenerationFields"]["properties"];
    assert_eq!(fields["width"]["maximum"], 1024);
    assert_eq!(fields["height"]["maximum"], 1024);
}

/// The properties of a schema, through its `$ref` and `allOf` parts.
fn properties(doc: &Value, schema: &Value) -> Map<String, Value> {
    let mut found = Map::new();
    if let Some(name) = schema["$ref"].as_str() {
        let name = name.strip_prefix("#/components/schemas/").unwrap();
        found.extend(properties(doc, &doc["components"]["schemas"][name]));
    }
    for part in schema["allOf"].as_array().into_iter().flatten() {
        found.extend(properties(doc, part));
    }
    if let Some(own) = schema["properties"].as_object() {
        found.extend(own.clone());
    }
    found
}

/// The smallest body of `operation` the validator accepts.
fn valid_body(operation: &str) -> Map<String, Value> {
    let picture = png_base64(64, 64);
    let body = match operation {
        "image_generation" => json!({}),
        "image_transform" => json!({ "input_image": picture }),
        "image_inpaint" => json!({ "init_image": picture, "mask_image": picture }),
        other => panic!("no valid body for operation `{other}`: add one"),
    };
    let mut body = body.as_object().unwrap().clone();
    body.insert("operation".into(), operation.into());
    body.insert("prompt".into(), "a cat".into());
    body
}

/// Runs a body through the worker's parser and validator, as `POST /v1/jobs`
/// does: `None` when accepted, else the field at fault.
fn verdict(state: &AppState, body: &Map<String, Value>) -> Option<String> {
    let bytes = serde_json::to_vec(body).unwrap();
    let checked = parse_job_request(&bytes).and_then(|request| {
        let (model, defaults) = state.serving_model()?;
        validate(request, &model, &defaults, &state.limits(), None)
    });
    let error = checked.err()?.detail();
    assert_eq!(error.code, ErrorCode::InvalidRequest, "{error:?}");
    error.field
}

/// The validation keywords this test checks, by field; any other bound in the
/// document is one the test cannot hold the validator to.
const CHECKED_BOUNDS: &[(&str, &[&str])] = &[
    ("steps", &["minimum", "maximum"]),
    ("guidance_scale", &["minimum", "maximum"]),
    ("strength", &["exclusiveMinimum", "maximum"]),
    ("width", &["minimum", "maximum", "multipleOf"]),
    ("height", &["minimum", "maximum", "multipleOf"]),
    ("prompt", &["minLength", "maxLength", "pattern"]),
    ("negative_prompt", &["maxLength"]),
    ("loras", &["maxItems"]),
    ("seed", &["minimum", "maximum"]),
    ("num_images", &["minimum", "maximum"]),
    ("clip_skip", &["minimum", "maximum"]),
    ("input_image", &["minLength"]),
    ("init_image", &["minLength"]),
    ("mask_image", &["minLength"]),
];

/// Every validation keyword JSON Schema has for numbers, strings and arrays.
const BOUND_KEYWORDS: &[&str] = &[
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
];

fn is_integer(property: &Value) -> bool {
    property["type"][0] == "integer"
}

/// How far past a bound a value is one step: 1 for integers; for numbers,
/// the resolution this test checks their bounds to.
fn step(property: &Value) -> f64 {
    if is_integer(property) {
        1.0
    } else {
        0.01
    }
}

/// `value` as the property's JSON type.
fn json_value(property: &Value, value: f64) -> Value {
    if is_integer(property) {
        json!(value as i64)
    } else {
        json!(value)
    }
}

#[test]
fn every_operation_publishes_the_bounds_the_validator_enforces() {
    let doc: Value = serde_json::from_str(&generated()).unwrap();
    let state = AppState::new(
        WorkerConfig::new("fake/model"),
        "127.0.0.1:9".parse().unwrap(),
    );
    state.mark_ready(ModelProfile {
        family: ModelFamily::Sd1,
        inpainting: false,
        native_size: (512, 512),
        vae_scale_factor: 8,
        scheduler: sd_core::schedulers::SchedulerKind::Pndm,
        step_limits: Default::default(),
        max_clip_skip: 11,
        tiny_decoder: false,
        precision: Default::default(),
    });
    let operations = doc["components"]["schemas"]["JobRequest"]["oneOf"]
        .as_array()
        .unwrap();
    for schema in operations {
        let fields = properties(&doc, schema);
        let operation = fields["operation"]["enum"][0].as_str().unwrap();
        let bound = |field: &str, key: &str| fields.get(field).and_then(|p| p[key].as_f64());
        let mut base = valid_body(operation);
        let with = |base: &Map<String, Value>, field: &str, value: f64| {
            let mut body = base.clone();
            body.insert(field.into(), json_value(&fields[field], value));
            body
        };
        // The most steps at full strength, so that every value tried runs a step.
        for field in ["steps", "strength"] {
            if let Some(max) = bound(field, "maximum") {
                base = with(&base, field, max);
            }
        }
        assert_eq!(verdict(&state, &base), None, "{operation}: {base:?}");
        let try_value = |field: &str, value: f64| verdict(&state, &with(&base, field, value));
        for field in [
            "steps",
            "guidance_scale",
            "strength",
            "num_images",
            "clip_skip",
        ] {
            let Some(property) = fields.get(field) else {
                assert_eq!(field, "strength", "{operation} has no `{field}`");
                continue;
            };
            let step = step(property);
            let named = Some(field.to_string());
            let context = format!("{operation}.{field} ({property})");
            match (bound(field, "minimum"), bound(field, "exclusiveMinimum")) {
                (Some(min), None) => {
                    assert_eq!(try_value(field, min), None, "{context}: minimum refused");
                    assert_eq!(
                        try_value(field, min - step),
                        named,
                        "{context}: below accepted"
                    );
                }
                (None, Some(min)) => {
                    assert_eq!(try_value(field, min), named, "{context}: bound accepted");
                    assert_eq!(
                        try_value(field, min + step),
                        None,
                        "{context}: above refused"
                    );
                }
                _ => panic!("{context}: one lower bound expected"),
            }
            let max = bound(field, "maximum").unwrap_or_else(|| panic!("{context}: no maximum"));
            assert_eq!(try_value(field, max), None, "{context}: maximum refused");
            assert_eq!(
                try_value(field, max + step),
                named,
                "{context}: above accepted"
            );
        }
        for field in ["width", "height"] {
            let context = format!("{operation}.{field}");
            let multiple =
                bound(field, "multipleOf").unwrap_or_else(|| panic!("{context}: no multipleOf"));
            let size = 64.0 * multiple;
            assert_eq!(try_value(field, size), None, "{context}: {size} refused");
            assert_eq!(
                try_value(field, size + multiple),
                None,
                "{context}: next refused"
            );
            for offset in 1..multiple as u32 {
                let value = size + f64::from(offset);
                let named = Some(field.to_string());
                assert_eq!(
                    try_value(field, value),
                    named,
                    "{context}: {value} accepted"
                );
            }
            let min = bound(field, "minimum").unwrap_or_else(|| panic!("{context}: no minimum"));
            assert_eq!(try_value(field, min), None, "{context}: minimum refused");
            assert_eq!(
                try_value(field, min - multiple),
                Some(field.to_string()),
                "{context}: below accepted"
            );
            let max = bound(field, "maximum").unwrap_or_else(|| panic!("{context}: no maximum"));
            assert_eq!(try_value(field, max), None, "{context}: maximum refused");
            assert_eq!(
                try_value(field, max + multiple),
                Some(field.to_string()),
                "{context}: above accepted"
            );
        }
        let with_json = |field: &str, value: Value| {
            let mut body = base.clone();
            body.insert(field.into(), value);
            verdict(&state, &body)
        };
        // Lengths count characters (a two-byte one here), as the schema's do.
        for field in ["prompt", "negative_prompt"] {
            let context = format!("{operation}.{field}");
            let max = fields[field]["maxLength"]
                .as_u64()
                .unwrap_or_else(|| panic!("{context}: no maxLength"))
                as usize;
            let longest = "é".repeat(max);
            assert_eq!(
                with_json(field, json!(longest)),
                None,
                "{context}: maxLength refused"
            );
            assert_eq!(
                with_json(field, json!(format!("{longest}a"))),
                Some(field.to_string()),
                "{context}: over maxLength accepted"
            );
        }
        // The prompt's pattern refuses exactly the texts the validator calls blank.
        let prompt = &fields["prompt"];
        assert_eq!(prompt["minLength"], 1, "{operation}.prompt");
        assert_eq!(with_json("prompt", json!("")), Some("prompt".into()));
        let pattern = prompt["pattern"].as_str().expect("a prompt pattern");
        let pattern = regex::Regex::new(pattern).unwrap();
        let chars = (0..=0x3000u32)
            .filter_map(char::from_u32)
            .filter(|c| c.is_whitespace())
            .chain(['a', '.', '\u{180e}', '\u{200b}', '\u{feff}']);
        for c in chars {
            let text = format!("{c}{c}");
            let refused = with_json("prompt", json!(text)) == Some("prompt".into());
            assert_eq!(
                refused,
                !pattern.is_match(&text),
                "{operation}.prompt: U+{:04X}",
                c as u32
            );
        }
        for field in ["input_image", "init_image", "mask_image"] {
            if fields.contains_key(field) {
                assert_eq!(fields[field]["minLength"], 1, "{operation}.{field}");
                assert_eq!(with_json(field, json!("")), Some(field.into()));
            }
        }
        assert_eq!(fields["seed"]["minimum"], 0, "{operation}.seed");
        assert_eq!(fields["seed"]["maximum"], u64::MAX, "{operation}.seed");
        assert_eq!(with_json("seed", json!(0)), None);
        assert_eq!(with_json("seed", json!(u64::MAX)), None);
        assert_eq!(with_json("seed", json!(-1)), Some("seed".into()));
        let lora = json!([{ "path": "a.safetensors" }]);
        let max_loras = sd_contract::limits::MAX_LORAS;
        assert_eq!(fields["loras"]["maxItems"], max_loras, "{operation}.loras");
        // Without a LoRA directory any LoRA is refused (`loras.rs` tests the bound with one).
        assert_eq!(with_json("loras", lora), Some("loras".into()));
        assert_eq!(with_json("loras", json!([])), None);
        for (field, property) in &fields {
            let checked = CHECKED_BOUNDS
                .iter()
                .find(|(name, _)| name == field)
                .map_or(&[][..], |(_, keywords)| keywords);
            for keyword in BOUND_KEYWORDS {
                let published = !property[*keyword].is_null();
                assert_eq!(
                    published,
                    checked.contains(keyword),
                    "{operation}.{field}: `{keyword}` published or checked, not both"
                );
            }
        }
    }
}

/// The OpenAI API's fields publish the job API's bounds for the fields they
/// share (the validator behind both is one), and `n` the bound the route enforces.
#[test]
fn the_openai_fields_publish_the_job_apis_bounds() {
    use sd_contract::openai::MAX_IMAGES;
    use sd_contract::OpenAiImageRequest;
    use sd_worker::openai::ImagesCall;

    let doc: Value = serde_json::from_str(&generated()).unwrap();
    let schemas = &doc["components"]["schemas"];
    let job_fields = properties(&doc, &schemas["ImageTransformRequest"]);
    for name in ["OpenAiImageRequest", "OpenAiImageEditForm"] {
        let fields = properties(&doc, &schemas[name]);
        for shared in [
            "prompt",
            "negative_prompt",
            "steps",
            "guidance_scale",
            "seed",
            "strength",
        ] {
            let Some(property) = fields.get(shared) else {
                assert_eq!(shared, "strength", "{name} has no `{shared}`");
                continue;
            };
            for keyword in BOUND_KEYWORDS {
                assert_eq!(
                    property[*keyword], job_fields[shared][*keyword],
                    "{name}.{shared}: `{keyword}` differs from the job API's"
                );
            }
        }
        assert_eq!(fields["n"]["minimum"], 1, "{name}.n");
        assert_eq!(fields["n"]["maximum"], MAX_IMAGES, "{name}.n");
    }
    let call = |n: u32| {
        ImagesCall::generation(OpenAiImageRequest {
            prompt: "a cat".into(),
            n: Some(n),
            ..Default::default()
        })
        .map(|call| call.count)
        .map_err(|e| e.detail().field)
    };
    assert_eq!(call(1), Ok(1));
    assert_eq!(call(MAX_IMAGES), Ok(MAX_IMAGES));
    assert_eq!(call(0), Err(Some("n".into())));
    assert_eq!(call(MAX_IMAGES + 1), Err(Some("n".into())));
}
