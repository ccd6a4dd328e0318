//! The A1111 calls besides generation: progress, interrupt, options, and the
//! lists clients read when they connect: the LoRAs of `--lora-dir`, and empty
//! lists of what this worker does not have (upscalers, VAEs, embeddings, scripts).

use axum::extract::State;
use axum::{Extension, Json};
use sd_contract::a1111::{
    A1111Done, A1111Embeddings, A1111Error, A1111Model, A1111Options, A1111OptionsUpdate,
    A1111Progress, A1111Sampler, A1111Scheduler, A1111Scripts, A1111State,
};

use super::generate::{SAMPLERS, SCHEDULES};
use super::{A1111ApiError, A1111Json, Interrupts};
use crate::error::ApiError;
use crate::state::AppState;

/// The running job's progress, with its newest live preview.
#[utoipa::path(
    get,
    path = "/sdapi/v1/progress",
    tag = "a1111",
    responses(
        (status = 200, description = "Progress of the running job", body = A1111Progress),
        (status = 401, description = "Missing or wrong API key", body = sd_contract::ErrorBody),
    ),
    security((), ("api_key" = []))
)]
pub async fn progress(State(state): State<AppState>) -> Json<A1111Progress> {
    let queued = u32::try_from(state.queue().len()).unwrap_or(u32::MAX);
    let Some(job) = state.running_job() else {
        return Json(A1111Progress {
            progress: 0.0,
            eta_relative: 0.0,
            state: A1111State {
                skipped: false,
                interrupted: false,
                job: String::new(),
                job_count: queued,
                job_timestamp: "0".into(),
                job_no: 0,
                sampling_step: 0,
                sampling_steps: 0,
            },
            current_image: None,
            textinfo: None,
        });
    };
    let status = job.status(None);
    let step = status.step.unwrap_or(0);
    let total = status.total.unwrap_or(job.params().steps).max(1);
    let progress = (f64::from(step) / f64::from(total)).clamp(0.0, 1.0);
    let images = job.params().num_images.max(1);
    let per_image = (total / images).max(1);
    let elapsed = job.started_at().map_or(0.0, |t| t.elapsed().as_secs_f64());
    let eta_relative = if progress > 0.0 {
        elapsed / progress - elapsed
    } else {
        0.0
    };
    let current_image = job
        .latest_preview()
        .and_then(|p| p.data_url.split_once(',').map(|(_, b64)| b64.to_string()));
    Json(A1111Progress {
        progress,
        eta_relative,
        state: A1111State {
            skipped: false,
            interrupted: job.cancel_requested().is_some(),
            job: job.id().to_string(),
            job_count: queued.saturating_add(1),
            job_timestamp: "0".into(),
            job_no: 0,
            // A1111 counts the steps of the image being made; a job of
            // several images counts all of theirs.
            sampling_step: if step == 0 {
                0
            } else {
                (step - 1) % per_image + 1
            },
            sampling_steps: per_image,
        },
        current_image,
        textinfo: Some(format!("Step {step}/{total}")),
    })
}

/// Interrupts every `txt2img` and `img2img` call in progress: their queued
/// jobs leave the queue, the running one stops within a step, and the calls
/// answer with no images. Jobs submitted through the job API are not touched.
#[utoipa::path(
    post,
    path = "/sdapi/v1/interrupt",
    tag = "a1111",
    responses(
        (status = 200, description = "Interrupted (also when nothing was running)", body = A1111Done),
        (status = 401, description = "Missing or wrong API key", body = sd_contract::ErrorBody),
    ),
    security((), ("api_key" = []))
)]
pub async fn interrupt(Extension(interrupts): Extension<Interrupts>) -> Json<A1111Done> {
    tracing::info!("A1111 interrupt");
    interrupts.interrupt();
    Json(A1111Done {})
}

/// Skips the batch being made: the running job of every `txt2img` and
/// `img2img` call in progress stops within a step (cancelled), and each call
/// goes on with its other jobs (the further batches of a call of more than
/// eight images), answering without the skipped job's images. AUTOMATIC1111
/// skips the current batch of `n_iter` the same way; our engine cannot hand
/// back a half-denoised image. Jobs submitted through the job API are not touched.
#[utoipa::path(
    post,
    path = "/sdapi/v1/skip",
    tag = "a1111",
    responses(
        (status = 200, description = "Skipped (also when nothing was running)", body = A1111Done),
        (status = 401, description = "Missing or wrong API key", body = sd_contract::ErrorBody),
    ),
    security((), ("api_key" = []))
)]
pub async fn skip(Extension(interrupts): Extension<Interrupts>) -> Json<A1111Done> {
    tracing::info!("A1111 skip");
    interrupts.skip();
    Json(A1111Done {})
}

/// The settings clients read.
#[utoipa::path(
    get,
    path = "/sdapi/v1/options",
    tag = "a1111",
    responses(
        (status = 200, description = "The settings", body = A1111Options),
        (status = 401, description = "Missing or wrong API key", body = sd_contract::ErrorBody),
    ),
    security((), ("api_key" = []))
)]
pub async fn get_options(State(state): State<AppState>) -> Json<A1111Options> {
    Json(A1111Options {
        sd_model_checkpoint: model_title(&state),
        clip_stop_at_last_layers: 1,
        samples_format: "png".into(),
        sd_vae: "Automatic".into(),
    })
}

/// Changes settings: `sd_model_checkpoint` may name the model served (a
/// no-op); other settings are ignored.
#[utoipa::path(
    post,
    path = "/sdapi/v1/options",
    tag = "a1111",
    request_body = A1111OptionsUpdate,
    responses(
        (status = 200, description = "Done (other settings ignored)", body = A1111Done),
        (status = 401, description = "Missing or wrong API key", body = sd_contract::ErrorBody),
        (status = 403, description = "Host or Origin not served", body = sd_contract::ErrorBody),
        (status = 408, description = "Body not received within the body timeout", body = A1111Error),
        (status = 413, description = "Body over the size limit", body = sd_contract::ErrorBody),
        (status = 415, description = "Body not sent as JSON", body = A1111Error),
        (status = 422, description = "Not a JSON object, or another model named", body = A1111Error),
    ),
    security((), ("api_key" = []))
)]
pub async fn set_options(
    State(state): State<AppState>,
    A1111Json { value, raw }: A1111Json<A1111OptionsUpdate>,
) -> Result<Json<A1111Done>, A1111ApiError> {
    let served = model_title(&state);
    if let Some(asked) = value.sd_model_checkpoint {
        if asked != served && asked != state.config().model {
            return Err(ApiError::invalid(
                "sd_model_checkpoint",
                format!("this worker serves `{served}` only, not `{asked}`"),
            )
            .into());
        }
    }
    let ignored: Vec<&String> = raw
        .as_object()
        .into_iter()
        .flat_map(|o| o.keys())
        .filter(|k| *k != "sd_model_checkpoint")
        .collect();
    if !ignored.is_empty() {
        tracing::info!(settings = ?ignored, "A1111 settings ignored");
    }
    Ok(Json(A1111Done {}))
}

/// The model served, as the one checkpoint.
#[utoipa::path(
    get,
    path = "/sdapi/v1/sd-models",
    tag = "a1111",
    responses(
        (status = 200, description = "The model served", body = Vec<A1111Model>),
        (status = 401, description = "Missing or wrong API key", body = sd_contract::ErrorBody),
    ),
    security((), ("api_key" = []))
)]
pub async fn sd_models(State(state): State<AppState>) -> Json<Vec<A1111Model>> {
    let title = model_title(&state);
    Json(vec![A1111Model {
        model_name: title.clone(),
        filename: title.clone(),
        title,
        hash: None,
        sha256: None,
        config: None,
    }])
}

/// The samplers, by A1111 name.
#[utoipa::path(
    get,
    path = "/sdapi/v1/samplers",
    tag = "a1111",
    responses(
        (status = 200, description = "The samplers", body = Vec<A1111Sampler>),
        (status = 401, description = "Missing or wrong API key", body = sd_contract::ErrorBody),
    ),
    security((), ("api_key" = []))
)]
pub async fn samplers() -> Json<Vec<A1111Sampler>> {
    Json(
        SAMPLERS
            .iter()
            .map(|(name, _, aliases)| A1111Sampler {
                name: name.to_string(),
                aliases: aliases.iter().map(|a| a.to_string()).collect(),
                options: Default::default(),
            })
            .collect(),
    )
}

/// The noise schedules: `automatic` (the sampler's own) and `karras`.
#[utoipa::path(
    get,
    path = "/sdapi/v1/schedulers",
    tag = "a1111",
    responses(
        (status = 200, description = "The schedules", body = Vec<A1111Scheduler>),
        (status = 401, description = "Missing or wrong API key", body = sd_contract::ErrorBody),
    ),
    security((), ("api_key" = []))
)]
pub async fn schedulers() -> Json<Vec<A1111Scheduler>> {
    Json(
        SCHEDULES
            .iter()
            .map(|(name, label)| A1111Scheduler {
                name: name.to_string(),
                label: label.to_string(),
                aliases: None,
                default_rho: -1.0,
                need_inner_model: false,
            })
            .collect(),
    )
}

/// LoRAs: the worker's `--lora-dir`, in A1111's shape (`name`, `alias`,
/// `path` inside the directory, `metadata`); empty without a directory.
#[utoipa::path(get, path = "/sdapi/v1/loras", tag = "a1111",
    responses(
        (status = 200, description = "The LoRA adapters", body = Vec<Object>),
        (status = 401, description = "Missing or wrong API key", body = sd_contract::ErrorBody),
    ),
    security((), ("api_key" = [])))]
pub async fn loras(State(state): State<AppState>) -> Json<Vec<serde_json::Value>> {
    let dir = state.config().lora_dir.clone();
    let list = tokio::task::spawn_blocking(move || dir.map(|d| d.list()).unwrap_or_default())
        .await
        .unwrap_or_default();
    Json(
        list.into_iter()
            .map(|lora| {
                serde_json::json!({
                    "name": lora.name,
                    "alias": lora.name,
                    "path": format!("{}.safetensors", lora.name),
                    "metadata": {},
                })
            })
            .collect(),
    )
}

/// Upscalers: none.
#[utoipa::path(get, path = "/sdapi/v1/upscalers", tag = "a1111",
    responses(
        (status = 200, description = "Empty", body = Vec<Object>),
        (status = 401, description = "Missing or wrong API key", body = sd_contract::ErrorBody),
    ),
    security((), ("api_key" = [])))]
pub async fn upscalers() -> Json<Vec<serde_json::Value>> {
    Json(Vec::new())
}

/// Latent upscale modes: none.
#[utoipa::path(get, path = "/sdapi/v1/latent-upscale-modes", tag = "a1111",
    responses(
        (status = 200, description = "Empty", body = Vec<Object>),
        (status = 401, description = "Missing or wrong API key", body = sd_contract::ErrorBody),
    ),
    security((), ("api_key" = [])))]
pub async fn latent_upscale_modes() -> Json<Vec<serde_json::Value>> {
    Json(Vec::new())
}

/// VAEs to choose from: none (the model's own is used).
#[utoipa::path(get, path = "/sdapi/v1/sd-vae", tag = "a1111",
    responses(
        (status = 200, description = "Empty", body = Vec<Object>),
        (status = 401, description = "Missing or wrong API key", body = sd_contract::ErrorBody),
    ),
    security((), ("api_key" = [])))]
pub async fn sd_vae() -> Json<Vec<serde_json::Value>> {
    Json(Vec::new())
}

/// Textual inversion embeddings: those of `--embeddings-dir`, in A1111's shape
/// (`shape` is the first encoder's width).
#[utoipa::path(get, path = "/sdapi/v1/embeddings", tag = "a1111",
    responses(
        (status = 200, description = "The embeddings prompts may name, and the files skipped", body = A1111Embeddings),
        (status = 401, description = "Missing or wrong API key", body = sd_contract::ErrorBody),
    ),
    security((), ("api_key" = [])))]
pub async fn embeddings(State(state): State<AppState>) -> Json<A1111Embeddings> {
    let Some(dir) = state.config().embeddings.as_ref() else {
        return Json(A1111Embeddings::default());
    };
    let list = dir.list();
    let entry = |shape: Option<usize>, vectors: Option<usize>| {
        serde_json::json!({
            "step": null,
            "sd_checkpoint": null,
            "sd_checkpoint_name": null,
            "shape": shape,
            "vectors": vectors,
        })
    };
    Json(A1111Embeddings {
        loaded: list
            .embeddings
            .iter()
            .map(|e| {
                (
                    e.name.clone(),
                    entry(e.widths.first().copied(), Some(e.vectors)),
                )
            })
            .collect(),
        skipped: list
            .skipped
            .iter()
            .map(|s| (s.name.clone(), entry(None, None)))
            .collect(),
    })
}

/// Scripts: none (`webuiapi` reads this when it connects).
#[utoipa::path(get, path = "/sdapi/v1/scripts", tag = "a1111",
    responses(
        (status = 200, description = "No scripts", body = A1111Scripts),
        (status = 401, description = "Missing or wrong API key", body = sd_contract::ErrorBody),
    ),
    security((), ("api_key" = [])))]
pub async fn scripts() -> Json<A1111Scripts> {
    Json(A1111Scripts::default())
}

/// The name the model is listed and selected by.
fn model_title(state: &AppState) -> String {
    sd_core::model::model_name(&state.config().model)
}
