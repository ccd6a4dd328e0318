//! `GET /v1/jobs/{id}/stream`: a job's events as server-sent events.
//!
//! Every event carries its index in the job's log as its SSE `id`, so a
//! client that reconnects with `Last-Event-ID` resumes after the last event
//! it saw; without it (or with it empty), a subscriber gets the whole log
//! first. An id that is not a decimal number, or that no event of the job has
//! had yet, is refused with a 400 naming the header: the log only grows, so
//! such an id was never sent and resuming from it would skip or repeat
//! events. After the
//! terminal event comes one message with a completion marker, then the
//! stream ends. Replayed progress events carry no live preview, except the
//! newest (see [`crate::jobs`]). At most `--max-streams` streams are open at
//! once; past that a request gets 503 with `Retry-After`. With a shared queue
//! (`--redis-url`) any worker serves any job's stream, the same events with
//! the same ids, read from Redis ([`crate::jobs::redis`]); there a replay
//! keeps every preview, up to the stream's bound.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{stream, Stream, StreamExt};
use sd_contract::{ErrorBody, StreamMessage};

use crate::error::ApiError;
use crate::extract::JobId;
use crate::jobs::LoggedEvent;
use crate::state::AppState;

/// Follows a job.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/stream",
    tag = "jobs",
    params(
        ("id" = String, Path, description = "The job id"),
        ("Last-Event-ID" = Option<String>, Header, nullable = false, pattern = "^[0-9]*$",
            description = "Resume after this event id: the `id` of an event this job's stream \
            sent. Absent or empty: the whole log. Not a decimal number: 400 naming \
            `Last-Event-ID`. Past the job's last event so far: 409. The id of the terminal \
            event: an empty stream."),
    ),
    responses(
        (status = 200, description = "Server-sent events: each `event:` is the JSON data's `type`; \
            after the terminal event a last `data:` line holds `[DONE]`, `[ERROR] <message>` or `[CANCELLED]`",
            content_type = "text/event-stream", body = StreamMessage),
        (status = 400, description = "`Last-Event-ID` is not a decimal number, or the job id \
            is not UTF-8 once percent-decoded", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "Unknown or expired job", body = ErrorBody),
        (status = 409, description = "`Last-Event-ID` is past the job's last event so far", body = ErrorBody),
        (status = 503, description = "As many streams are open as the worker serves (`--max-streams`)",
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying")),
            body = ErrorBody),
    ),
    security((), ("api_key" = []))
)]
pub async fn stream_job(
    State(state): State<AppState>,
    JobId(id): JobId,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, axum::Error>>>, ApiError> {
    let (logged, source) = state.job_events(&id).await?;
    let from = resume_from(&headers, logged)?;
    let slot = state.open_stream()?;
    let events = source.subscribe(from).flat_map(move |logged| {
        let _held_until_the_stream_ends = &slot;
        stream::iter(to_sse(logged))
    });
    let keep_alive = KeepAlive::new()
        .interval(state.config().sse_keep_alive)
        .text("keep-alive");
    Ok(Sse::new(events).keep_alive(keep_alive))
}

/// The log index to stream from: 0 without a `Last-Event-ID`, else the one
/// after it, once it is known to be the id of one of the `logged` events.
fn resume_from(headers: &HeaderMap, logged: usize) -> Result<usize, ApiError> {
    const HEADER: &str = "Last-Event-ID";
    let Some(value) = headers.get(HEADER) else {
        return Ok(0);
    };
    let text = value.to_str().ok().map(str::trim);
    if text == Some("") {
        return Ok(0);
    }
    let digits = text.filter(|t| t.bytes().all(|b| b.is_ascii_digit()));
    let Some(digits) = digits else {
        return Err(ApiError::invalid(
            HEADER,
            format!(
                "must be the decimal id of an event of this stream, got `{}`",
                String::from_utf8_lossy(value.as_bytes())
            ),
        ));
    };
    // Too many digits for a usize is past any log.
    let id = digits.parse::<usize>().unwrap_or(usize::MAX);
    if id >= logged {
        let last = match logged {
            0 => "the job has no event yet".to_string(),
            n => format!("its last event so far is {}", n - 1),
        };
        return Err(ApiError::EventNotLogged(format!(
            "{digits} is not the id of an event of this job: {last}"
        )));
    }
    Ok(id + 1)
}

/// One logged event as an SSE message, followed by its completion marker
/// when it is terminal.
fn to_sse((index, event): LoggedEvent) -> Vec<Result<Event, axum::Error>> {
    let message = Event::default()
        .event(event.name())
        .id(index.to_string())
        .json_data(event.as_ref());
    let marker = event
        .completion_marker()
        .map(|marker| Ok(Event::default().data(marker)));
    std::iter::once(message).chain(marker).collect()
}
