//! `GET /openapi.json`: the OpenAPI 3.1 document of this API, generated from
//! the handlers' annotations and the contract's types. The same document is
//! committed as `openapi.json` at the repository root; a test fails when the
//! two drift apart.

use axum::extract::State;
use axum::Json;
use sd_contract::event::CancelReason;
use sd_contract::*;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::RefOr;
use utoipa::{Modify, OpenApi};

use super::{a1111, embeddings, health, info, jobs, loras, metrics, openai, stream};
use crate::state::AppState;

/// The API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "sd-worker",
        description = "Stable Diffusion worker: submit image jobs, follow them over server-sent \
            events, fetch the PNG. Speaks rbee's job API (operation bodies tagged by `operation`) and \
            the OpenAI Images API."
    ),
    paths(
        jobs::create_job,
        jobs::list_jobs,
        jobs::get_job,
        jobs::cancel_job,
        stream::stream_job,
        info::info,
        loras::list_loras,
        embeddings::list_embeddings,
        health::health,
        health::ready,
        metrics::metrics,
        openapi_json,
        openai::generate_images,
        openai::edit_images,
        openai::list_models,
        a1111::txt2img,
        a1111::img2img,
        a1111::progress,
        a1111::interrupt,
        a1111::skip,
        a1111::get_options,
        a1111::set_options,
        a1111::sd_models,
        a1111::samplers,
        a1111::schedulers,
        a1111::loras,
        a1111::upscalers,
        a1111::latent_upscale_modes,
        a1111::sd_vae,
        a1111::embeddings,
        a1111::scripts,
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
        JobList,
        JobSummary,
        JobState,
        JobParams,
        ImageResult,
        ImageFormat,
        Timings,
        JobEvent,
        StreamMessage,
        ProgressPreview,
        CancelReason,
        ErrorBody,
        ErrorDetail,
        ErrorCode,
        WorkerInfo,
        LoraDirectory,
        LoraList,
        LoraInfo,
        EmbeddingDirectory,
        EmbeddingList,
        EmbeddingInfo,
        SkippedEmbeddingInfo,
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
        OpenAiImageRequest,
        OpenAiImageEditForm,
        OpenAiEditFields,
        OpenAiResponseFormat,
        OpenAiImagesResponse,
        OpenAiImage,
        OpenAiModelList,
        OpenAiModel,
        OpenAiErrorBody,
        OpenAiError,
        sd_contract::a1111::A1111Info,
    )),
    modifiers(&ApiKeyScheme, &JobLinks, &WholeSeeds),
    tags(
        (name = "jobs", description = "Submit, follow, inspect and cancel image jobs"),
        (name = "worker", description = "What the worker serves"),
        (name = "health", description = "Liveness and readiness (never need the API key)"),
        (name = "openai", description = "The OpenAI Images API: each image is a job, and the \
            call answers once all are made; errors in OpenAI's shape"),
        (name = "a1111", description = "The AUTOMATIC1111 web UI API subset its clients use \
            (Open WebUI, SillyTavern, webuiapi); unknown A1111 fields are ignored"),
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

/// Seeds are `u64`, which utoipa documents as `int64`; that format bounds
/// them at 2^63 - 1, and the worker takes (and makes) seeds up to 2^64 - 1.
/// Every `seed` property is left a whole number from 0 with no format.
struct WholeSeeds;

impl Modify for WholeSeeds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::Schema;

        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for schema in components.schemas.values_mut() {
            let RefOr::T(schema) = schema else { continue };
            let objects: Vec<&mut utoipa::openapi::schema::Object> = match schema {
                Schema::Object(object) => vec![object],
                Schema::AllOf(all) => all
                    .items
                    .iter_mut()
                    .filter_map(|item| match item {
                        RefOr::T(Schema::Object(object)) => Some(object),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            for object in objects {
                if let Some(RefOr::T(Schema::Object(seed))) = object.properties.get_mut("seed") {
                    seed.format = None;
                }
            }
        }
    }
}

/// Links from a submission's `job_id` to the operations on that job, so
/// clients and test generators can follow a job from the document alone.
struct JobLinks;

impl Modify for JobLinks {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(accepted) = openapi
            .paths
            .paths
            .get_mut("/v1/jobs")
            .and_then(|item| item.post.as_mut())
            .and_then(|post| post.responses.responses.get_mut("202"))
        else {
            return;
        };
        let RefOr::T(accepted) = accepted else {
            return;
        };
        for (name, operation_id, description) in [
            ("GetJob", "get_job", "The job's status"),
            ("StreamJob", "stream_job", "The job's events"),
            ("CancelJob", "cancel_job", "Cancel the job"),
        ] {
            let mut link = LinkBuilder::new()
                .parameter("id", "$response.body#/job_id")
                .description(description)
                .build();
            // utoipa writes its `operation_id` field in snake case, which is not
            // OpenAPI's `operationId`; the key is set as written in the spec.
            link.extensions
                .get_or_insert_with(Default::default)
                .insert("operationId".into(), operation_id.into());
            accepted.links.insert(name.into(), RefOr::T(link));
        }
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
pub async fn openapi_json(State(state): State<AppState>) -> Json<utoipa::openapi::OpenApi> {
    Json(served_document(state.config().max_size))
}

/// The document as a worker serves it: [`ApiDoc`], whose width and height
/// bounds are the default `--max-size`, with this worker's own.
pub fn served_document(max_size: u32) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::schema::Schema;

    let mut doc = ApiDoc::openapi();
    for schema in ["GenerationFields", "A1111Generation"] {
        let fields = doc
            .components
            .as_mut()
            .and_then(|c| c.schemas.get_mut(schema));
        if let Some(RefOr::T(Schema::Object(fields))) = fields {
            for name in ["width", "height"] {
                if let Some(RefOr::T(Schema::Object(size))) = fields.properties.get_mut(name) {
                    size.maximum = Some(max_size.into());
                }
            }
        }
    }
    doc
}
