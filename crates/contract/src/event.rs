//! The events of a job's stream (`GET /v1/jobs/{id}/stream`).
//!
//! Each event goes out as a server-sent event whose `event:` name is the
//! event's `type` and whose `data:` is the event as JSON, `type` included. The
//! terminal event (`complete`, `error` or `cancelled`) is followed by one more
//! message whose data is a completion marker (see [`completion_markers`]), the
//! line rbee's job client stops on.
//!
//! A job of one image streams `queued`, `started`, `progress` per step and
//! `complete`. A job of several images (`num_images`) counts its `progress`
//! steps over all its images (`total` is the steps of one image times their
//! number), sends an `image` event as each image is finished, and ends with a
//! `complete` event that carries the first image as a job of one would, and
//! every image in `images`. Images finished before a job failed or was
//! cancelled are in their `image` events only.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{BatchImage, ErrorDetail, ImageResult, JobParams};

/// Why a job was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// A client sent `DELETE /v1/jobs/{id}`.
    Client,
    /// The worker is shutting down.
    Shutdown,
}

/// A live preview of a job in progress: the latents projected linearly to RGB
/// (no VAE pass), a few hundred pixels wide, blurry and with muted colours.
///
/// Only the stream's newest preview is kept for replay: a client that joins
/// late or resumes gets the previews of the steps it missed without them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProgressPreview {
    /// The PNG file as a data URL (`data:image/png;base64,...`), ready for an
    /// `<img src>`.
    pub data_url: String,
    /// Width in pixels (the image's width / 8, enlarged up to 8 times).
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// One event of a job's life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobEvent {
    /// The job was accepted into the queue.
    Queued {
        /// 1 when it is next to run.
        position: u32,
    },
    /// The engine started the job.
    Started {
        /// The parameters it runs with (the seed included).
        params: JobParams,
    },
    /// A worker of a shared queue (`--redis-url`) took the job over after
    /// the worker running it stopped answering: the job starts again from its
    /// beginning, with the same seed, so `started` and `progress` from step 1
    /// follow. Never sent by a worker without a shared queue.
    Restarted {
        /// This run's number, 2 for the first restart.
        attempt: u32,
        /// The worker that runs it now.
        worker_id: String,
    },
    /// A denoising step finished.
    Progress {
        /// Steps done so far, 1-based, over all the job's images: step `s` of
        /// image `i` (0-based) of a job of several is `i * steps + s`, where
        /// `steps` is one image's (`total / num_images`).
        step: u32,
        /// Steps in all: one image's times the number of images.
        total: u32,
        /// `100 * step / total`, rounded to two decimals.
        percent: f32,
        /// A rough picture of the image so far, on some steps of jobs that
        /// asked for `preview`; absent otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        preview: Option<ProgressPreview>,
    },
    /// One image of a job of several is ready (never sent for a job of one
    /// image: its `complete` event brings it).
    Image(BatchImage),
    /// The job is done: its image, or of several the first, and all of them
    /// in `images`.
    Complete(ImageResult),
    /// The job failed.
    Error(ErrorDetail),
    /// The job was stopped before it finished.
    Cancelled {
        /// Who stopped it.
        reason: CancelReason,
    },
}

impl JobEvent {
    /// The event's `type`, also its server-sent event name.
    pub fn name(&self) -> &'static str {
        match self {
            JobEvent::Queued { .. } => "queued",
            JobEvent::Started { .. } => "started",
            JobEvent::Restarted { .. } => "restarted",
            JobEvent::Progress { .. } => "progress",
            JobEvent::Image(_) => "image",
            JobEvent::Complete(_) => "complete",
            JobEvent::Error(_) => "error",
            JobEvent::Cancelled { .. } => "cancelled",
        }
    }

    /// Whether this event ends the job (nothing but the marker follows it).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobEvent::Complete(_) | JobEvent::Error(_) | JobEvent::Cancelled { .. }
        )
    }

    /// The completion marker that follows this event, if it is terminal.
    pub fn completion_marker(&self) -> Option<String> {
        match self {
            JobEvent::Complete(_) => Some(completion_markers::DONE.to_string()),
            JobEvent::Error(e) => Some(format!(
                "{} {}",
                completion_markers::ERROR_PREFIX,
                e.message
            )),
            JobEvent::Cancelled { .. } => Some(completion_markers::CANCELLED.to_string()),
            _ => None,
        }
    }
}

/// The data lines that end a job's stream, as rbee's job client expects them.
pub mod completion_markers {
    /// After `complete`.
    pub const DONE: &str = "[DONE]";
    /// After `error`, followed by a space and the error message.
    pub const ERROR_PREFIX: &str = "[ERROR]";
    /// After `cancelled`.
    pub const CANCELLED: &str = "[CANCELLED]";

    /// Whether a data line is one of the markers.
    pub fn is_completion_marker(line: &str) -> bool {
        line == DONE || line == CANCELLED || line.starts_with(ERROR_PREFIX)
    }
}

/// One server-sent message of a job's stream, as the OpenAPI document
/// describes it (the stream itself is written by the SSE encoder, not by serde).
///
/// A message is an event, named after its JSON data's `type` and numbered by
/// its `id` (the value `Last-Event-ID` takes), or, after the terminal event,
/// one unnamed message whose data is a completion marker.
pub struct StreamMessage;

impl utoipa::PartialSchema for StreamMessage {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};

        let mut event_data = ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("A job event as JSON"))
            .content_media_type("application/json")
            .build();
        // `contentSchema` (JSON Schema 2020-12) has no builder in utoipa.
        event_data
            .extensions
            .get_or_insert_with(Default::default)
            .insert(
                "contentSchema".into(),
                serde_json::json!({ "$ref": "#/components/schemas/JobEvent" }),
            );
        let marker = ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "The completion marker after the terminal event: `[DONE]`, `[CANCELLED]` \
                 or `[ERROR] <message>`",
            ))
            .pattern(Some(r"^\[(DONE|CANCELLED)\]$|^\[ERROR\]"))
            .build();
        ObjectBuilder::new()
            .description(Some(
                "One server-sent message: `event` and `id` name and number a job event, \
                 whose JSON is `data`; the last message has only `data`, a completion marker",
            ))
            .property(
                "event",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("The event's `type`")),
            )
            .property(
                "id",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[0-9]+$"))
                    .description(Some("The event's index in the job's log")),
            )
            .property("data", OneOfBuilder::new().item(event_data).item(marker))
            .required("data")
            .into()
    }
}

impl utoipa::ToSchema for StreamMessage {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn events_carry_their_type() {
        let progress = JobEvent::Progress {
            step: 2,
            total: 4,
            percent: 50.0,
            preview: None,
        };
        assert_eq!(
            serde_json::to_string(&progress).unwrap(),
            r#"{"type":"progress","step":2,"total":4,"percent":50.0}"#
        );
        let with_preview = JobEvent::Progress {
            step: 2,
            total: 4,
            percent: 50.0,
            preview: Some(ProgressPreview {
                data_url: "data:image/png;base64,AAAA".into(),
                width: 8,
                height: 16,
            }),
        };
        let json = serde_json::to_string(&with_preview).unwrap();
        assert_eq!(
            json,
            r#"{"type":"progress","step":2,"total":4,"percent":50.0,"preview":{"data_url":"data:image/png;base64,AAAA","width":8,"height":16}}"#
        );
        assert_eq!(
            serde_json::from_str::<JobEvent>(&json).unwrap(),
            with_preview
        );
        let error = JobEvent::Error(ErrorDetail::new(ErrorCode::GenerationFailed, "boom"));
        let json = serde_json::to_value(&error).unwrap();
        assert_eq!(json["type"], "error");
        assert_eq!(json["code"], "generation_failed");
        assert_eq!(error.completion_marker().unwrap(), "[ERROR] boom");
        let cancelled = JobEvent::Cancelled {
            reason: CancelReason::Client,
        };
        assert_eq!(
            serde_json::to_string(&cancelled).unwrap(),
            r#"{"type":"cancelled","reason":"client"}"#
        );
        assert!(completion_markers::is_completion_marker(
            &cancelled.completion_marker().unwrap()
        ));
        assert_eq!(progress.completion_marker(), None);
    }

    #[test]
    fn a_job_of_one_image_reads_as_before_and_a_batch_lists_its_images() {
        let timings = crate::Timings {
            queued_ms: 1,
            generation_ms: 2,
            total_ms: 3,
        };
        let image = |index: u32| BatchImage {
            index,
            image: format!("IMG{index}"),
            format: crate::ImageFormat::Png,
            seed: 7 + u64::from(index),
            width: 64,
            height: 64,
            timings,
        };
        let mut result = ImageResult {
            image: "IMG0".into(),
            format: crate::ImageFormat::Png,
            seed: 7,
            width: 64,
            height: 64,
            timings,
            images: Vec::new(),
        };
        let single = serde_json::to_value(JobEvent::Complete(result.clone())).unwrap();
        assert!(single.get("images").is_none(), "{single}");
        result.images = vec![image(0), image(1)];
        let batch = serde_json::to_value(JobEvent::Complete(result.clone())).unwrap();
        assert_eq!(batch["image"], "IMG0");
        assert_eq!(batch["images"][1]["seed"], 8);
        assert_eq!(
            serde_json::from_value::<JobEvent>(batch).unwrap(),
            JobEvent::Complete(result)
        );
        let event = JobEvent::Image(image(1));
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            (json["type"].as_str(), json["index"].as_u64()),
            (Some("image"), Some(1))
        );
        assert_eq!(event.name(), "image");
        assert!(!event.is_terminal());
    }
}
