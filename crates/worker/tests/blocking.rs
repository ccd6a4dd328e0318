//! Submitting the jobs of several images and waiting for them (the shared
//! part of the OpenAI and AUTOMATIC1111 routes), on the fake engine.

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
fn several_images_are_one_job_with_consecutive_seeds() {
    let server = TestServer::ready(config());
    let finished = server
        .runtime()
        .block_on(submit_and_wait(&server.state, request(Some(41)), 3))
        .unwrap();
    assert_eq!(finished.len(), 1);
    let seeds: Vec<u64> = finished[0].images().iter().map(|(_, seed)| *seed).collect();
    assert_eq!(seeds, [41, 42, 43]);
    assert_eq!(finished[0].job.params().num_images, 3);
    // An ordinary job: the job API knows it.
    let status = get(&server.url, &format!("/v1/jobs/{}", finished[0].job.id()));
    assert_eq!(status.status, 200);
}

#[test]
fn more_than_eight_images_are_jobs_of_eight_whose_seeds_count_on() {
    let server = TestServer::ready(config());
    let finished = server
        .runtime()
        .block_on(submit_and_wait(
            &server.state,
            request(Some(u64::MAX - 9)),
            20,
        ))
        .unwrap();
    let sizes: Vec<u32> = finished.iter().map(|f| f.job.params().num_images).collect();
    assert_eq!(sizes, [8, 8, 4]);
    let seeds: Vec<u64> = finished
        .iter()
        .flat_map(|f| f.images().into_iter().map(|(_, seed)| seed))
        .collect();
    let expected: Vec<u64> = (0..20).map(|i| (u64::MAX - 9).wrapping_add(i)).collect();
    assert_eq!(seeds, expected);
    assert!(finished
        .iter()
        .all(|f| matches!(f.end.as_ref(), JobEvent::Complete(_))));
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
        .spawn(async move { submit_and_wait(&state, request(Some(1)), 10).await });
    wait_until(Duration::from_secs(5), || server.state.jobs().len() == 2);
    waiting.abort();
    wait_until(Duration::from_secs(5), || {
        server.state.jobs().unfinished().is_empty()
    });
    assert_eq!(server.state.jobs().len(), 2);
}
