//! The OpenAI Images API: `POST /v1/images/generations`,
//! `POST /v1/images/edits` and `GET /v1/models` (see [`crate::openai`]).
//! The calls answer once their images are made; each image is a job of the
//! job API meanwhile.

use axum::extract::State;
use axum::Json;
use sd_contract::{
    OpenAiErrorBody, OpenAiImageEditForm, OpenAiImageRequest, OpenAiImagesResponse, OpenAiModel,
    OpenAiModelList,
};

use crate::error::ApiError;
use crate::extract::JsonObject;
use crate::openai::{mask_from_alpha, run, EditForm, ImagesCall, OpenAiFailure};
use crate::state::AppState;

/// Makes images from a prompt (OpenAI's "create image").
#[utoipa::path(
    post,
    path = "/v1/images/generations",
    tag = "openai",
    request_body = OpenAiImageRequest,
    responses(
        (status = 200, description = "The images, once all are made", body = OpenAiImagesResponse),
        (status = 400, description = "Malformed JSON or a bad field (`param` names it, as \
            OpenAI does: `size` for a bad width or height)", body = OpenAiErrorBody),
        (status = 401, description = "Missing or wrong API key", body = OpenAiErrorBody),
        (status = 403, description = "Host or Origin not served", body = OpenAiErrorBody),
        (status = 408, description = "Body not received within the body timeout", body = OpenAiErrorBody),
        (status = 413, description = "Body over the size limit", body = OpenAiErrorBody),
        (status = 415, description = "Body not sent as JSON", body = OpenAiErrorBody),
        (status = 499, description = "A job was cancelled through the job API", body = OpenAiErrorBody),
        (status = 500, description = "Generating an image failed", body = OpenAiErrorBody),
        (status = 503, description = "Queue full, model not ready, or shutting down",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying")),
            body = OpenAiErrorBody),
    ),
    security((), ("api_key" = []))
)]
pub async fn generate_images(
    State(state): State<AppState>,
    JsonObject(request): JsonObject<OpenAiImageRequest>,
) -> Result<Json<OpenAiImagesResponse>, OpenAiFailure> {
    let call = ImagesCall::generation(request)?;
    Ok(Json(run(&state, call).await?))
}

/// Edits a picture from a prompt (OpenAI's "create image edit"): inpainting
/// with a mask, image-to-image without one.
#[utoipa::path(
    post,
    path = "/v1/images/edits",
    tag = "openai",
    request_body(content = OpenAiImageEditForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The images, once all are made", body = OpenAiImagesResponse),
        (status = 400, description = "A malformed form, a picture that does not decode, a mask \
            without an alpha channel, or a bad field (`param` names it)", body = OpenAiErrorBody),
        (status = 401, description = "Missing or wrong API key", body = OpenAiErrorBody),
        (status = 403, description = "Host or Origin not served", body = OpenAiErrorBody),
        (status = 408, description = "Body not received within the body timeout", body = OpenAiErrorBody),
        (status = 413, description = "Body over the size limit", body = OpenAiErrorBody),
        (status = 415, description = "Body not sent as multipart/form-data", body = OpenAiErrorBody),
        (status = 499, description = "A job was cancelled through the job API", body = OpenAiErrorBody),
        (status = 500, description = "Generating an image failed", body = OpenAiErrorBody),
        (status = 503, description = "Queue full, model not ready, or shutting down",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying")),
            body = OpenAiErrorBody),
    ),
    security((), ("api_key" = []))
)]
pub async fn edit_images(
    State(state): State<AppState>,
    mut form: EditForm,
) -> Result<Json<OpenAiImagesResponse>, OpenAiFailure> {
    let max_pixels = usize::try_from(state.limits().max_input_pixels).unwrap_or(usize::MAX);
    // Decoding pictures is CPU work: keep it off the threads that serve streams.
    let mask = match form.mask.take() {
        Some(mask) => Some(
            tokio::task::spawn_blocking(move || mask_from_alpha(&mask, max_pixels))
                .await
                .map_err(|e| ApiError::Internal(format!("converting the mask: {e}")))??,
        ),
        None => None,
    };
    let call = ImagesCall::edit(form, mask)?;
    Ok(Json(run(&state, call).await?))
}

/// The model this worker serves, as OpenAI lists models: named as the PNGs name it (a
/// repository id, or a local folder's last component, never its path).
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "openai",
    responses(
        (status = 200, description = "The one model served", body = OpenAiModelList),
        (status = 401, description = "Missing or wrong API key", body = OpenAiErrorBody),
    ),
    security((), ("api_key" = []))
)]
pub async fn list_models(State(state): State<AppState>) -> Json<OpenAiModelList> {
    Json(OpenAiModelList {
        object: "list".into(),
        data: vec![OpenAiModel {
            id: sd_core::model::model_name(&state.config().model),
            object: "model".into(),
            created: state.started_unix(),
            owned_by: "sd-worker".into(),
        }],
    })
}
