//! The OpenAI Images API on top of the job API: OpenAI's requests turned into
//! jobs, the finished jobs into OpenAI's answer, and every error of the
//! OpenAI routes into OpenAI's error shape.
//!
//! - `size` (`WIDTHxHEIGHT`) becomes the job's width and height; an error
//!   about either names `size` again. The pictures' fields are `image` and
//!   `mask`, as OpenAI names them.
//! - An edit's `mask` follows OpenAI's convention (fully transparent pixels
//!   are edited); it becomes the job API's mask (white = repaint) here. A
//!   mask without an alpha channel is refused: it cannot say what to edit.
//! - A job that fails answers 500 (`server_error`). A job cancelled through
//!   the job API answers 499 (nginx's "client closed request": a client
//!   ended it; OpenAI's clients do not retry it); one cancelled by the worker
//!   shutting down answers 503 (`shutting_down`), which clients may retry elsewhere.

use axum::body::{to_bytes, Body};
use axum::extract::multipart::MultipartError;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sd_contract::event::CancelReason;
use sd_contract::{
    ErrorBody, ErrorCode, ErrorDetail, GenerationFields, ImageInpaintRequest,
    ImageTransformRequest, JobEvent, JobRequest, OpenAiEditFields, OpenAiError, OpenAiErrorBody,
    OpenAiImage, OpenAiImageRequest, OpenAiImagesResponse, OpenAiResponseFormat,
};
use sd_core::image::{encode_png, ColorMode, DecodedImage};
use serde_json::{Map, Value};

use crate::body::BodyTimedOut;
use crate::error::ApiError;
use crate::routes::blocking::{submit_and_wait, Finished};
use crate::state::{unix_seconds, AppState};

/// The most images one call may ask for.
pub use sd_contract::openai::MAX_IMAGES;

/// One images call as jobs: the request each job copies (seeds counting up
/// from its seed), how many, and how the answer carries the images.
#[derive(Debug, Clone)]
pub struct ImagesCall {
    /// The job request of the first image.
    pub request: JobRequest,
    /// How many images (jobs).
    pub count: u32,
    /// How the images come back.
    pub format: OpenAiResponseFormat,
    /// The `size` asked for, quoted in errors about the width or height.
    pub size: Option<String>,
}

impl ImagesCall {
    /// A `POST /v1/images/generations` body as text-to-image jobs.
    pub fn generation(req: OpenAiImageRequest) -> Result<Self, ApiError> {
        let (width, height) = parse_size(req.size.as_deref())?;
        let generation = GenerationFields {
            model: req.model,
            prompt: req.prompt,
            negative_prompt: req.negative_prompt,
            prompt_syntax: req.prompt_syntax,
            steps: req.steps,
            guidance_scale: req.guidance_scale,
            seed: req.seed,
            width,
            height,
            scheduler: req.scheduler,
            ..Default::default()
        };
        Ok(Self {
            request: JobRequest::ImageGeneration(sd_contract::ImageGenerationRequest {
                generation,
            }),
            count: image_count(req.n)?,
            format: req.response_format.unwrap_or_default(),
            size: req.size,
        })
    }

    /// A `POST /v1/images/edits` form as image-to-image jobs, or, given
    /// `job_mask` (the form's mask converted by [`mask_from_alpha`]),
    /// inpainting jobs.
    pub fn edit(form: EditForm, job_mask: Option<Vec<u8>>) -> Result<Self, ApiError> {
        let EditForm {
            image,
            prompt,
            fields,
            mask: _,
        } = form;
        let (width, height) = parse_size(fields.size.as_deref())?;
        let generation = GenerationFields {
            model: fields.model,
            prompt,
            negative_prompt: fields.negative_prompt,
            prompt_syntax: fields.prompt_syntax,
            steps: fields.steps,
            guidance_scale: fields.guidance_scale,
            seed: fields.seed,
            width,
            height,
            scheduler: fields.scheduler,
            ..Default::default()
        };
        let base64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let request = match job_mask {
            Some(mask) => JobRequest::ImageInpaint(ImageInpaintRequest {
                generation,
                init_image: base64(&image),
                mask_image: base64(&mask),
                strength: fields.strength,
            }),
            None => JobRequest::ImageTransform(ImageTransformRequest {
                generation,
                strength: fields.strength,
                input_image: base64(&image),
            }),
        };
        Ok(Self {
            request,
            count: image_count(fields.n)?,
            format: fields.response_format.unwrap_or_default(),
            size: fields.size,
        })
    }
}

/// Runs the call's jobs and answers with their images, or with the first
/// error among them.
pub async fn run(
    state: &AppState,
    call: ImagesCall,
) -> Result<OpenAiImagesResponse, OpenAiFailure> {
    let size = call.size.clone();
    let finished = submit_and_wait(state, call.request, call.count)
        .await
        .map_err(|e| in_openai_terms(e, size.as_deref()))?;
    let mut data = Vec::new();
    for job in &finished {
        data.extend(images_of(job, call.format, size.as_deref())?);
    }
    Ok(OpenAiImagesResponse {
        created: unix_seconds(std::time::SystemTime::now()),
        data,
    })
}

/// The images of one job, or the error it ended with.
fn images_of(
    finished: &Finished,
    format: OpenAiResponseFormat,
    size: Option<&str>,
) -> Result<Vec<OpenAiImage>, OpenAiFailure> {
    let job_id = finished.job.id();
    match finished.end.as_ref() {
        JobEvent::Complete(_) => Ok(finished
            .images()
            .into_iter()
            .map(|(image, seed)| {
                let (b64_json, url) = match format {
                    OpenAiResponseFormat::B64Json => (Some(image.to_string()), None),
                    OpenAiResponseFormat::Url => {
                        (None, Some(format!("data:image/png;base64,{image}")))
                    }
                };
                OpenAiImage {
                    b64_json,
                    url,
                    seed,
                    job_id: job_id.to_string(),
                }
            })
            .collect()),
        JobEvent::Error(detail) => {
            let status = match detail.code {
                ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
                ErrorCode::NotReady | ErrorCode::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let mut detail = detail.clone();
            detail.message = format!("job {job_id}: {}", detail.message);
            if let Some(field) = detail.field.take() {
                let renamed = in_openai_terms(ApiError::invalid(field, &detail.message), size);
                let renamed = renamed.detail();
                (detail.field, detail.message) = (renamed.field, renamed.message);
            }
            Err(OpenAiFailure::new(status, &detail))
        }
        JobEvent::Cancelled { reason } => {
            let (status, code, message) = match reason {
                CancelReason::Client => (
                    StatusCode::from_u16(499).unwrap_or(StatusCode::CONFLICT),
                    "cancelled",
                    format!("job {job_id} was cancelled (DELETE /v1/jobs/{job_id})"),
                ),
                CancelReason::Shutdown => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::ShuttingDown.as_str(),
                    format!("job {job_id} was cancelled: the worker is shutting down"),
                ),
            };
            Err(OpenAiFailure::from_parts(status, code, None, message))
        }
        other => {
            Err(ApiError::Internal(format!("job {job_id} ended with {}", other.name())).into())
        }
    }
}

/// `n`: 1 when absent, else 1 to [`MAX_IMAGES`].
fn image_count(n: Option<u32>) -> Result<u32, ApiError> {
    match n.unwrap_or(1) {
        n @ 1..=MAX_IMAGES => Ok(n),
        n => Err(ApiError::invalid(
            "n",
            format!("must be between 1 and {MAX_IMAGES}, got {n}"),
        )),
    }
}

/// `WIDTHxHEIGHT` as a width and a height; absent or `auto`: neither (the
/// worker's default size, or the picture's). The bounds are the validator's.
pub fn parse_size(size: Option<&str>) -> Result<(Option<u32>, Option<u32>), ApiError> {
    let Some(text) = size.filter(|s| *s != "auto") else {
        return Ok((None, None));
    };
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    match text.split_once('x').map(|(w, h)| (number(w), number(h))) {
        Some((Some(width), Some(height))) => Ok((Some(width), Some(height))),
        _ => Err(ApiError::invalid(
            "size",
            format!(
                "must be `WIDTHxHEIGHT` in pixels (such as `512x512`) or `auto`, got `{}`",
                text.chars().take(40).collect::<String>()
            ),
        )),
    }
}

/// A job API error in the OpenAI API's terms: the width and height are
/// `size` (the message quoting it), the pictures `image` and `mask`.
pub fn in_openai_terms(error: ApiError, size: Option<&str>) -> ApiError {
    let ApiError::InvalidField { field, message } = error else {
        return error;
    };
    match field.as_str() {
        "width" | "height" => {
            let given = size.map_or(String::new(), |s| format!(" `{s}`"));
            ApiError::invalid("size", format!("size{given}: the {field} {message}"))
        }
        "input_image" | "init_image" => ApiError::invalid("image", message),
        "mask_image" => ApiError::invalid("mask", message),
        _ => ApiError::InvalidField { field, message },
    }
}

/// OpenAI's mask (a PNG whose fully transparent pixels mark the area to
/// edit) as the job API's: a PNG, white where alpha is 0, black elsewhere.
pub fn mask_from_alpha(png: &[u8], max_pixels: usize) -> Result<Vec<u8>, ApiError> {
    let mask = DecodedImage::decode(png, max_pixels)
        .map_err(|e| ApiError::invalid("mask", e.to_string()))?;
    let mode = mask.mode();
    if !matches!(mode, ColorMode::LumaAlpha | ColorMode::Rgba) {
        return Err(ApiError::invalid(
            "mask",
            format!(
                "has no alpha channel ({mode:?}): a mask is a PNG with transparency whose fully \
                 transparent pixels (alpha 0) mark the area to edit, as OpenAI's are"
            ),
        ));
    }
    let channels = mode.channels();
    let rgb: Vec<u8> = mask
        .pixels()
        .chunks_exact(channels)
        .flat_map(|pixel| {
            let value = if pixel[channels - 1] == 0 { 255 } else { 0 };
            [value; 3]
        })
        .collect();
    encode_png(&rgb, mask.width(), mask.height(), None)
        .map_err(|e| ApiError::Internal(format!("encoding the mask: {e}")))
}

/// The parts of a `POST /v1/images/edits` form, read but not yet checked.
#[derive(Debug, Clone, Default)]
pub struct EditForm {
    /// The picture file's bytes.
    pub image: Vec<u8>,
    /// The mask file's bytes (OpenAI's convention).
    pub mask: Option<Vec<u8>>,
    /// The prompt.
    pub prompt: String,
    /// The other text fields.
    pub fields: OpenAiEditFields,
}

impl FromRequest<AppState> for EditForm {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("(not text)").to_string());
        let is_form = content_type.as_deref().is_some_and(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("multipart/form-data"))
        });
        if !is_form {
            return Err(ApiError::NotMultipart(
                content_type.unwrap_or_else(|| "no content type".into()),
            ));
        }
        let limit = state.config().max_body_bytes;
        let mut multipart =
            Multipart::from_request(req, state)
                .await
                .map_err(|r| ApiError::InvalidJson {
                    field: None,
                    message: r.body_text(),
                })?;
        let mut image = None;
        let mut mask = None;
        let mut text = Map::new();
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| form_error(e, limit))?
        {
            let name = field.name().unwrap_or("").to_string();
            match name.as_str() {
                "image" | "image[]" | "mask" => {
                    let bytes = field.bytes().await.map_err(|e| form_error(e, limit))?;
                    let slot = if name == "mask" {
                        &mut mask
                    } else {
                        &mut image
                    };
                    if slot.replace(bytes.to_vec()).is_some() {
                        let shown = if name == "mask" { "mask" } else { "image" };
                        return Err(ApiError::invalid(
                            shown,
                            "give one file (this worker edits one picture)",
                        ));
                    }
                }
                "prompt" => {
                    let value = field.text().await.map_err(|e| form_error(e, limit))?;
                    text.insert(name, Value::String(value));
                }
                known if OpenAiEditFields::FIELDS.contains(&known) => {
                    let value = field.text().await.map_err(|e| form_error(e, limit))?;
                    let value = text_value(known, value);
                    text.insert(name, value);
                }
                // Fields OpenAI has that a worker has no use for (`quality`,
                // `background`, ...) and unknown ones are ignored.
                _ => {}
            }
        }
        let image = image.ok_or_else(|| ApiError::invalid("image", "is required: a PNG file"))?;
        if image.is_empty() {
            return Err(ApiError::invalid("image", "must not be empty"));
        }
        let prompt = match text.remove("prompt") {
            Some(Value::String(prompt)) => prompt,
            _ => return Err(ApiError::invalid("prompt", "is required")),
        };
        let fields: OpenAiEditFields =
            crate::extract::parse(&serde_json::to_vec(&Value::Object(text)).unwrap_or_default())?;
        Ok(EditForm {
            image,
            mask,
            prompt,
            fields,
        })
    }
}

/// A form's text as the JSON value the field takes: a number for the
/// numeric fields (when it reads as one), else the text.
fn text_value(field: &str, text: String) -> Value {
    if OpenAiEditFields::NUMBERS.contains(&field) {
        if let Ok(number) = serde_json::from_str::<serde_json::Number>(text.trim()) {
            return Value::Number(number);
        }
    }
    Value::String(text)
}

fn form_error(error: MultipartError, limit: u64) -> ApiError {
    if let Some(BodyTimedOut(timeout)) = BodyTimedOut::find(&error) {
        ApiError::BodyTimeout {
            secs: timeout.as_secs_f64(),
        }
    } else if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { limit }
    } else {
        ApiError::InvalidJson {
            field: None,
            message: format!("malformed multipart/form-data body: {}", error.body_text()),
        }
    }
}

/// An error answer in OpenAI's shape, with the headers the job API's
/// answer for the same error has (`Retry-After`, `WWW-Authenticate`, ...).
#[derive(Debug)]
pub struct OpenAiFailure(Box<Response>);

/// Marks a response already in OpenAI's shape, so [`openai_errors`] leaves it.
#[derive(Debug, Clone, Copy)]
struct OpenAiShaped;

impl OpenAiFailure {
    fn new(status: StatusCode, detail: &ErrorDetail) -> Self {
        Self::from_parts(
            status,
            detail.code.as_str(),
            detail.field.clone(),
            detail.message.clone(),
        )
    }

    fn from_parts(status: StatusCode, code: &str, param: Option<String>, message: String) -> Self {
        if status.is_server_error() {
            tracing::warn!(%status, code, message, "images call failed");
        }
        let body = openai_error(status, code, param, message);
        Self(Box::new(shaped(
            status,
            axum::http::HeaderMap::new(),
            &body,
        )))
    }
}

impl From<ApiError> for OpenAiFailure {
    fn from(error: ApiError) -> Self {
        let detail = error.detail();
        let (parts, _) = error.into_response().into_parts();
        let body = openai_error(
            parts.status,
            detail.code.as_str(),
            detail.field,
            detail.message,
        );
        Self(Box::new(shaped(parts.status, parts.headers, &body)))
    }
}

impl IntoResponse for OpenAiFailure {
    fn into_response(self) -> Response {
        *self.0
    }
}

fn openai_error(
    status: StatusCode,
    code: &str,
    param: Option<String>,
    message: String,
) -> OpenAiErrorBody {
    let kind = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    };
    OpenAiErrorBody {
        error: OpenAiError {
            message,
            kind: kind.into(),
            param,
            code: Some(code.into()),
        },
    }
}

fn shaped(
    status: StatusCode,
    mut headers: axum::http::HeaderMap,
    body: &OpenAiErrorBody,
) -> Response {
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (status, headers, Body::from(bytes)).into_response();
    response.extensions_mut().insert(OpenAiShaped);
    response
}

/// Whether a path is one of the OpenAI API's.
pub fn is_openai_path(path: &str) -> bool {
    path.starts_with("/v1/images/") || path == "/v1/models" || path.starts_with("/v1/models/")
}

/// Middleware: on the OpenAI API's paths, turns an error answered in the job
/// API's shape by any layer (auth, host check, body limits, unknown method)
/// into OpenAI's shape, so OpenAI clients can read every error.
pub async fn openai_errors(request: Request, next: Next) -> Response {
    let openai = is_openai_path(request.uri().path());
    let response = next.run(request).await;
    let status = response.status();
    if !openai
        || !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<OpenAiShaped>().is_some()
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, 1 << 20).await else {
        return OpenAiFailure::from(ApiError::Internal("unreadable error body".into()))
            .into_response();
    };
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(ErrorBody { error }) => {
            let body = openai_error(status, error.code.as_str(), error.field, error.message);
            shaped(status, parts.headers, &body)
        }
        Err(_) => Response::from_parts(parts, Body::from(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_or_name_the_field() {
        assert_eq!(parse_size(None).unwrap(), (None, None));
        assert_eq!(parse_size(Some("auto")).unwrap(), (None, None));
        assert_eq!(parse_size(Some("512x768")).unwrap(), (Some(512), Some(768)));
        for bad in [
            "512",
            "x512",
            "512x",
            "-8x8",
            "5 x5",
            "1e3x8",
            "99999999999x8",
            "512X512",
        ] {
            let detail = parse_size(Some(bad)).unwrap_err().detail();
            assert_eq!(detail.field.as_deref(), Some("size"), "{bad}");
        }
    }

    #[test]
    fn width_and_height_errors_name_the_size() {
        let error = in_openai_terms(
            ApiError::invalid("width", "must be a multiple of 8, got 65"),
            Some("65x64"),
        );
        let detail = error.detail();
        assert_eq!(detail.field.as_deref(), Some("size"));
        assert!(detail.message.contains("65x64"), "{}", detail.message);
        let error = in_openai_terms(ApiError::invalid("init_image", "bad"), None);
        assert_eq!(error.detail().field.as_deref(), Some("image"));
    }

    #[test]
    fn transparent_pixels_become_the_white_repaint_area() {
        // 2x1 RGBA: a transparent pixel, then an opaque one.
        let rgba = [10, 20, 30, 0, 10, 20, 30, 255];
        let mut png = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut png, 2, 1);
            encoder.set_color(png::ColorType::Rgba);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header().unwrap();
            writer.write_image_data(&rgba).unwrap();
        }
        let mask = mask_from_alpha(&png, 100).unwrap();
        let decoded = DecodedImage::decode(&mask, 100).unwrap().to_luma();
        assert_eq!(decoded.pixels(), [255, 0]);
        let opaque = encode_png(&[1, 2, 3, 4, 5, 6], 2, 1, None).unwrap();
        let detail = mask_from_alpha(&opaque, 100).unwrap_err().detail();
        assert_eq!(detail.field.as_deref(), Some("mask"));
        assert!(detail.message.contains("alpha"), "{}", detail.message);
    }
}
