//! `GET /openapi.json`: the OpenAPI 3.1 document of this API, generated from
//! the handlers' annotations and the contract's types. The same document is
//! committed as `openapi.json` at the repository root; a test fails when the
//! two drift apart.

use axum::Json;
use sd_contract::event::CancelReason;
use sd_contract::*;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{health, info, jobs, stream};

/// The API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "sd-worker",
        description = "Stable Diffusion worker: submit image jobs, follow them over server-sent \
            events, fetch the PNG. Speaks rbee's job API (operation bodies tagged by `operation`)."
    ),
    paths(
        jobs::create_job,
        jobs::get_job,
        jobs::cancel_job,
        stream::stream_job,
        info::info,
        health::health,
        health::ready,
        openapi_json,
    ),
    components(schemas(
        JobRequest,
        GenerationFields,
        ImageGenerationRequest,
        ImageTransformRequest,
        ImageInpaintRequest,
        LoraConfig,
        SchedulerKind,
        JobCreated,
        JobStatus,
        JobState,
        JobParams,
        ImageResult,
        ImageFormat,
        Timings,
        JobEvent,
        ProgressPreview,
        CancelReason,
        ErrorBody,
        ErrorDetail,
        ErrorCode,
        WorkerInfo,
        GenerationDefaults,
        Limits,
        JobCounts,
        Health,
        Readiness,
        ReadinessState,
        WorkerReady,
        WorkerHeartbeat,
        HeartbeatWorker,
        WorkerStatus,
    )),
    modifiers(&ApiKeyScheme),
    tags(
        (name = "jobs", description = "Submit, follow, inspect and cancel image jobs"),
        (name = "worker", description = "What the worker serves"),
        (name = "health", description = "Liveness and readiness (never need the API key)"),
    )
)]
pub struct ApiDoc;

struct ApiKeyScheme;

impl Modify for ApiKeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "Needed on every route but /health and /ready when the worker runs with --api-key",
                    ))
                    .build(),
            ),
        );
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "worker",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")),
    security((), ("api_key" = []))
)]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
