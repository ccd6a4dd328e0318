//! The OpenAPI document: generated from the code, committed as
//! `openapi.json` at the repository root, and served at `/openapi.json`.
//!
//! After changing the API, refresh the committed copy with
//! `UPDATE_OPENAPI=1 cargo test -p sd-worker --test openapi`.

use std::path::PathBuf;

use axum::body::Body;
use axum::http::Request;
use sd_worker::routes::openapi::ApiDoc;
use sd_worker::{app, AppState, WorkerConfig};
use serde_json::Value;
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
    ] {
        assert!(paths[path][method].is_object(), "{method} {path} missing");
    }
    let schemas = &doc["components"]["schemas"];
    let events = schemas["JobEvent"]["oneOf"].as_array().unwrap();
    assert_eq!(events.len(), 6);
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
