//! The JSON extractor of `POST /v1/jobs`, whose rejections use the API's
//! error format and name the field at fault.
//!
//! The body is parsed in two steps: first only its `operation` tag, then the
//! request type that tag selects, with the path of any bad field tracked, so a
//! client learns both which operation was understood and which field is wrong.
//! Serde buffers the fields every operation shares (flattened
//! [`GenerationFields`]) and loses the path of an error among them, so a body
//! that fails is read again as those fields alone to name the one at fault.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use sd_contract::{GenerationFields, JobRequest, LoraConfig};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;

use crate::body::BodyTimedOut;
use crate::error::ApiError;
use crate::state::AppState;

/// A job request taken from a JSON body, with the fields it has that the
/// contract does not know (ignored, or refused under `--strict`).
#[derive(Debug)]
pub struct JobBody {
    /// The request.
    pub request: JobRequest,
    /// Its unknown fields, as paths (`foo`, `loras[0].scale`), sorted.
    pub unknown_fields: Vec<String>,
}

/// The longest job id looked up; the worker's own are 36 characters.
pub const MAX_JOB_ID_LEN: usize = 128;

/// The `{id}` of a `/v1/jobs/{id}` route. An id that is not UTF-8 once
/// percent-decoded answers 400 and an over-long one 404, both in the API's
/// JSON error format (axum's own rejection is plain text).
#[derive(Debug)]
pub struct JobId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for JobId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) if id.len() <= MAX_JOB_ID_LEN => Ok(JobId(id)),
            Ok(Path(id)) => Err(ApiError::JobNotFound(format!(
                "{}… ({} bytes; ids are at most {MAX_JOB_ID_LEN})",
                id.chars().take(40).collect::<String>(),
                id.len()
            ))),
            Err(rejection) => Err(ApiError::invalid("id", rejection.body_text())),
        }
    }
}

#[derive(Deserialize)]
struct OperationTag {
    operation: Option<String>,
}

impl FromRequest<AppState> for JobBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = json_body(req, state).await?;
        let request = parse_job_request(&bytes)?;
        let unknown_fields = unknown_fields(&bytes, request.operation());
        if state.config().strict {
            if let Some(field) = unknown_fields.first() {
                return Err(ApiError::invalid(
                    field.clone(),
                    format!(
                        "unknown field (not part of {}; --strict refuses it)",
                        request.operation()
                    ),
                ));
            }
        }
        Ok(JobBody {
            request,
            unknown_fields,
        })
    }
}

/// The bytes of a body sent as JSON: the content type checked, the size
/// limit and body timeout applied, every refusal in the API's error format.
pub(crate) async fn json_body(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    check_content_type(&req)?;
    Bytes::from_request(req, state)
        .await
        .map_err(|r| body_rejection(r, state.config().max_body_bytes))
}

/// Requires a JSON content type. Without one, a plain HTML form of any site
/// could post a job (a form can send `text/plain`, or nothing, but not JSON).
fn check_content_type(req: &Request) -> Result<(), ApiError> {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType("no content type".into()));
    };
    let text = value.to_str().unwrap_or("(not text)");
    let mime = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || mime.ends_with("+json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(text.to_string()))
    }
}

/// The error for a body that could not be read: too slow, too large or broken.
fn body_rejection(rejection: BytesRejection, limit: u64) -> ApiError {
    if let Some(BodyTimedOut(timeout)) = BodyTimedOut::find(&rejection) {
        ApiError::BodyTimeout {
            secs: timeout.as_secs_f64(),
        }
    } else if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { limit }
    } else {
        ApiError::InvalidJson {
            field: None,
            message: rejection.body_text(),
        }
    }
}

/// A JSON object body parsed as `T`, for the routes whose body is one
/// struct; rejections use the API's error format and name the bad field.
#[derive(Debug)]
pub struct JsonObject<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonObject<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = json_body(req, state).await?;
        require_object(&bytes)?;
        parse(&bytes).map(JsonObject)
    }
}

/// Refuses a body that is not a JSON object (serde would read an array as a
/// struct's fields in order).
fn require_object(bytes: &[u8]) -> Result<(), ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        parse::<serde::de::IgnoredAny>(bytes)?;
        return Err(ApiError::InvalidJson {
            field: None,
            message: "the body must be a JSON object".into(),
        });
    }
    Ok(())
}

/// Parses a `POST /v1/jobs` body.
pub fn parse_job_request(bytes: &[u8]) -> Result<JobRequest, ApiError> {
    require_object(bytes)?;
    let tag: OperationTag = parse(bytes)?;
    let operation = tag.operation.ok_or_else(|| ApiError::UnknownOperation {
        message: format!(
            "missing `operation` (expected one of: {})",
            JobRequest::OPERATIONS.join(", ")
        ),
    })?;
    match operation.as_str() {
        "image_generation" => parse_operation(bytes).map(JobRequest::ImageGeneration),
        "image_transform" => parse_operation(bytes).map(JobRequest::ImageTransform),
        "image_inpaint" => parse_operation(bytes).map(JobRequest::ImageInpaint),
        other => Err(ApiError::UnknownOperation {
            message: format!(
                "unknown operation `{other}` (expected one of: {})",
                JobRequest::OPERATIONS.join(", ")
            ),
        }),
    }
}

/// The fields of a body (already parsed as an `operation` request) that the
/// contract does not know: top-level keys outside [`JobRequest::fields`] and
/// keys of `loras` entries outside [`LoraConfig::FIELDS`]. `null` values count
/// like any other: rbee's `null`s are for fields the contract has.
pub fn unknown_fields(bytes: &[u8], operation: &str) -> Vec<String> {
    #[derive(Deserialize)]
    struct Loras {
        #[serde(default)]
        loras: Option<Vec<BTreeMap<String, IgnoredAny>>>,
    }
    let Some(known) = JobRequest::fields(operation) else {
        return Vec::new();
    };
    let top: BTreeMap<String, IgnoredAny> = serde_json::from_slice(bytes).unwrap_or_default();
    let mut unknown: Vec<String> = top
        .into_keys()
        .filter(|key| !known.contains(&key.as_str()))
        .collect();
    let loras = serde_json::from_slice::<Loras>(bytes)
        .ok()
        .and_then(|l| l.loras);
    for (i, lora) in loras.unwrap_or_default().into_iter().enumerate() {
        unknown.extend(
            lora.into_keys()
                .filter(|key| !LoraConfig::FIELDS.contains(&key.as_str()))
                .map(|key| format!("loras[{i}].{key}")),
        );
    }
    unknown
}

/// Parses an operation's body; when that fails, the shared fields' own error,
/// if they have one, since it names its field.
fn parse_operation<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    parse(bytes).map_err(|error| match parse::<GenerationFields>(bytes) {
        Err(shared) => shared,
        Ok(_) => error,
    })
}

/// Parses JSON as `T`; a bad value's error names its field (its path).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let field = (path != "." && path != "?").then_some(path);
        match (inner.classify(), field) {
            (serde_json::error::Category::Data, Some(field)) => ApiError::InvalidField {
                field,
                message: inner.to_string(),
            },
            (serde_json::error::Category::Data, None) => match missing_field(&inner) {
                Some(field) => ApiError::InvalidField {
                    field,
                    message: "is required".into(),
                },
                None => ApiError::InvalidJson {
                    field: None,
                    message: format!("the body must be a JSON object: {inner}"),
                },
            },
            (_, _) => ApiError::InvalidJson {
                field: None,
                message: format!("malformed JSON: {inner}"),
            },
        }
    })
}

/// The field a "missing field `x`" error names.
fn missing_field(err: &serde_json::Error) -> Option<String> {
    let text = err.to_string();
    let rest = text.strip_prefix("missing field `")?;
    rest.split('`').next().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use sd_contract::ErrorCode;

    use super::*;

    fn error_of(body: &str) -> (ErrorCode, Option<String>) {
        let detail = parse_job_request(body.as_bytes()).unwrap_err().detail();
        (detail.code, detail.field)
    }

    #[test]
    fn bad_bodies_are_classified() {
        assert_eq!(error_of("{not json"), (ErrorCode::InvalidJson, None));
        assert_eq!(error_of("[1,2]"), (ErrorCode::InvalidJson, None));
        assert_eq!(
            error_of(r#"{"prompt":"x"}"#),
            (ErrorCode::UnknownOperation, Some("operation".into()))
        );
        assert_eq!(
            error_of(r#"{"operation":"image_upscale","prompt":"x"}"#),
            (ErrorCode::UnknownOperation, Some("operation".into()))
        );
        assert_eq!(
            error_of(r#"{"operation":"image_generation","prompt":"x","steps":"ten"}"#),
            (ErrorCode::InvalidRequest, Some("steps".into()))
        );
        assert_eq!(
            error_of(r#"{"operation":"image_generation","prompt":"x","width":-8}"#),
            (ErrorCode::InvalidRequest, Some("width".into()))
        );
        assert_eq!(
            error_of(r#"{"operation":"image_generation","prompt":"x","scheduler":"lms"}"#),
            (ErrorCode::InvalidRequest, Some("scheduler".into()))
        );
        assert_eq!(
            error_of(r#"{"operation":"image_generation"}"#),
            (ErrorCode::InvalidRequest, Some("prompt".into()))
        );
    }

    #[test]
    fn every_operation_names_its_bad_field() {
        for (operation, images) in [
            ("image_generation", ""),
            ("image_transform", r#","input_image":"AAAA""#),
            (
                "image_inpaint",
                r#","init_image":"AAAA","mask_image":"AAAA""#,
            ),
        ] {
            for (field, value, path) in [
                ("steps", r#""ten""#, "steps"),
                ("guidance_scale", "[]", "guidance_scale"),
                ("seed", "-1", "seed"),
                ("width", "2.5", "width"),
                ("preview", "1", "preview"),
                ("loras", r#"[{"path":7}]"#, "loras[0].path"),
            ] {
                let body = format!(
                    r#"{{"operation":"{operation}","prompt":"x"{images},"{field}":{value}}}"#
                );
                let detail = parse_job_request(body.as_bytes()).unwrap_err().detail();
                assert_eq!(
                    (detail.code, detail.field.as_deref()),
                    (ErrorCode::InvalidRequest, Some(path)),
                    "{body}"
                );
                assert!(detail.message.contains("line 1"), "{}", detail.message);
            }
        }
        for (body, field) in [
            (
                r#"{"operation":"image_transform","prompt":"x","input_image":"AAAA","strength":"high"}"#,
                "strength",
            ),
            (
                r#"{"operation":"image_inpaint","prompt":"x","init_image":"AAAA","mask_image":5}"#,
                "mask_image",
            ),
            (
                r#"{"operation":"image_inpaint","prompt":"x","init_image":"AAAA"}"#,
                "mask_image",
            ),
            (
                r#"{"operation":"image_transform","input_image":"AAAA"}"#,
                "prompt",
            ),
        ] {
            assert_eq!(
                error_of(body),
                (ErrorCode::InvalidRequest, Some(field.into())),
                "{body}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_those_outside_the_contract() {
        let body = br#"{"operation":"image_inpaint","prompt":"x","init_image":"A","input_image":null,
            "mask_image":"B","model":null,"hive_id":"h","extra":1,"loras":[{"path":"p","strength":null},
            {"path":"q","weight":2}],"Prompt":"y"}"#;
        assert_eq!(
            unknown_fields(body, "image_inpaint"),
            ["Prompt", "extra", "loras[1].weight"]
        );
        let body =
            br#"{"operation":"image_generation","prompt":"x","mask_image":"B","strength":1}"#;
        assert_eq!(
            unknown_fields(body, "image_generation"),
            ["mask_image", "strength"]
        );
    }

    #[test]
    fn nulls_are_accepted() {
        let req = parse_job_request(
            br#"{"operation":"image_generation","prompt":"x","steps":null,"seed":null,"scheduler":null,"loras":null}"#,
        )
        .unwrap();
        assert_eq!(req.operation(), "image_generation");
    }
}
