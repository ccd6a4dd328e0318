//! A cancel takes effect within about a second, whatever phase the job is
//! in: during text encoding (the fake engine's, made long) and in the middle
//! of one long denoising step of the real tiny model, over HTTP.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use sd_contract::event::CancelReason;
use sd_contract::{JobCreated, JobEvent, JobState, JobStatus};

/// How long a cancel may take to end a job, DELETE to the stream's end, on a
/// loaded two-core machine.
const PROMPTLY: Duration = Duration::from_secs(2);

/// Cancels `created` and waits for its stream to end; asserts it ended
/// cancelled within [`PROMPTLY`] and returns the stream and the latency.
fn cancel(base: &str, created: &JobCreated) -> (Transcript, Duration) {
    let sent = Instant::now();
    let resp = delete(base, &format!("/v1/jobs/{}", created.job_id));
    assert_eq!(resp.status, 202, "{}", resp.body);
    let transcript = stream(base, &created.sse_url, &[]);
    let latency = sent.elapsed();
    assert_cancelled(&transcript, CancelReason::Client);
    eprintln!("cancelled {latency:?} after the DELETE");
    assert!(latency < PROMPTLY, "cancelled {latency:?} after the DELETE");
    (transcript, latency)
}

fn status(base: &str, created: &JobCreated) -> JobStatus {
    get(base, &format!("/v1/jobs/{}", created.job_id)).json()
}

fn steps_reported(transcript: &Transcript) -> usize {
    transcript
        .events()
        .iter()
        .filter(|e| matches!(e, JobEvent::Progress { .. }))
        .count()
}

#[test]
fn a_cancel_during_text_encoding_ends_the_job_at_once() {
    let server = TestServer::start(config(), fake("encode_ms=60000"));
    server.wait_ready();
    let created = submit(
        &server.url,
        &generation(r#","width":64,"height":64,"steps":2"#),
    );
    wait_until(Duration::from_secs(10), || {
        status(&server.url, &created).state == JobState::Running
    });
    let (transcript, _) = cancel(&server.url, &created);
    assert_eq!(transcript.types(), ["queued", "started", "cancelled"]);
}

/// On the tiny SD 1.5 model a 512×512 guided step takes several seconds in
/// the test profile (about 8 s on two loaded cores). A DELETE as soon as the
/// job runs lands in text encoding or early in the first step; one half a
/// second after the first step lands in the second. Either ends the job
/// before the step it interrupted reports progress.
#[test]
fn a_cancel_stops_a_real_job_at_its_start_and_mid_step() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-sd15");
    let worker = WorkerProcess::spawn(&["--model", folder.to_str().unwrap()], &[]);
    worker.wait_ready();
    let body = generation(r#","width":512,"height":512,"steps":4,"scheduler":"euler""#);

    let created = submit(&worker.url, &body);
    wait_until(Duration::from_secs(30), || {
        status(&worker.url, &created).state == JobState::Running
    });
    let (transcript, _) = cancel(&worker.url, &created);
    assert_eq!(steps_reported(&transcript), 0, "{:?}", transcript.types());

    let created = submit(&worker.url, &body);
    wait_until(Duration::from_secs(60), || {
        status(&worker.url, &created).step == Some(1)
    });
    std::thread::sleep(Duration::from_millis(500));
    let (transcript, _) = cancel(&worker.url, &created);
    assert_eq!(steps_reported(&transcript), 1, "{:?}", transcript.types());
}
