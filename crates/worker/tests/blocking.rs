//! Submitting several jobs and waiting for their images (the shared part of
//! the OpenAI and AUTOMATIC1111 routes), on the fake engine.

mod common;

use std::time::Duration;

use common::*;
use sd_contract::{GenerationFields, ImageGenerationRequest, JobEvent, JobRequest};
use sd_worker::routes::blocking::submit_and_wait;

fn request(seed: Option<u64>) -> JobRequest {
    JobRequest::ImageGeneration(ImageGenerationRequest {
        generation: GenerationFields {
            prompt: "a lighthouse".into(),
            steps: Some(2),
            width: Some(64),
            height: Some(64),
            seed,
            ..Default::default()
        },
    })
}

#[test]
fn several_images_are_jobs_with_consecutive_seeds() {
    let server = TestServer::ready(config());
    let finished = server
        .runtime()
        .block_on(submit_and_wait(&server.state, request(Some(41)), 3))
        .unwrap();
    let seeds: Vec<u64> = finished
        .iter()
        .map(|f| match f.end.as_ref() {
            JobEvent::Complete(image) => image.seed,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(seeds, [41, 42, 43]);
    // Ordinary jobs: the job API knows them.
    for f in &finished {
        let status = get(&server.url, &format!("/v1/jobs/{}", f.job.id()));
        assert_eq!(status.status, 200);
    }
}

#[test]
fn an_invalid_request_queues_nothing() {
    let server = TestServer::ready(config());
    let mut bad = request(None);
    bad.generation_mut().steps = Some(0);
    let err = server
        .runtime()
        .block_on(submit_and_wait(&server.state, bad, 2))
        .unwrap_err();
    assert_eq!(err.status(), 400);
    assert_eq!(server.state.jobs().len(), 0);
}

#[test]
fn a_caller_that_goes_away_cancels_its_jobs() {
    let server = TestServer::start(config(), fake("step_ms=60000"));
    server.wait_ready();
    let state = server.state.clone();
    let waiting = server
        .runtime()
        .spawn(async move { submit_and_wait(&state, request(Some(1)), 2).await });
    wait_until(Duration::from_secs(5), || server.state.jobs().len() == 2);
    waiting.abort();
    wait_until(Duration::from_secs(5), || {
        server.state.jobs().unfinished().is_empty()
    });
    assert_eq!(server.state.jobs().len(), 2);
}
