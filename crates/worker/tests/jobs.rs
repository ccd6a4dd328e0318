//! The job API end to end against the fake engine, served on a free port:
//! submit, stream, status, cancel, failures, retention and load.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use sd_contract::event::CancelReason;
use sd_contract::{ErrorCode, JobEvent, JobState, JobStatus};

#[test]
fn a_job_streams_its_events_and_ends_with_a_png_of_the_requested_size() {
    let server = TestServer::ready(config());
    let created = submit(
        &server.url,
        &generation(r#","width":96,"height":72,"steps":4,"seed":7"#),
    );
    assert_eq!(
        created.sse_url,
        format!("/v1/jobs/{}/stream", created.job_id)
    );

    let transcript = stream(&server.url, &created.sse_url, &[]);
    assert_eq!(
        transcript.types(),
        ["queued", "started", "progress", "progress", "progress", "progress", "complete"]
    );
    assert_eq!(transcript.marker(), "[DONE]");
    let ids: Vec<_> = transcript.messages.iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids[0].as_deref(), Some("0"));
    assert_eq!(ids[6].as_deref(), Some("6"));
    let events = transcript.events();
    let JobEvent::Started { params } = &events[1] else {
        panic!()
    };
    assert_eq!(
        (params.width, params.height, params.steps, params.seed),
        (96, 72, 4, 7)
    );
    let JobEvent::Progress {
        step,
        total,
        percent,
        preview,
    } = &events[3]
    else {
        panic!()
    };
    assert_eq!((*step, *total, *percent), (2, 4, 50.0));
    assert_eq!(*preview, None);
    let JobEvent::Complete(result) = &events[6] else {
        panic!()
    };
    assert_eq!((result.width, result.height, result.seed), (96, 72, 7));
    assert_eq!(png_size(&result.image), (96, 72));
    let parameters = png_parameters_text(&result.image);
    assert!(
        parameters.ends_with("Size: 96x72, Model hash: 0000000000, Model: fake"),
        "{parameters}"
    );
    assert!(result.timings.total_ms >= result.timings.generation_ms);

    let status: JobStatus = get(&server.url, &format!("/v1/jobs/{}", created.job_id)).json();
    assert_eq!(status.state, JobState::Completed);
    assert_eq!((status.step, status.total), (Some(4), Some(4)));
    assert_eq!(status.result.unwrap().image, result.image);
}

/// A job of several images streams an `image` event per image, with the
/// seeds seed, seed + 1, …, counts its steps over all of them, and ends with
/// the first image as a job of one would, every image in `images`.
#[test]
fn a_job_of_three_images_streams_each_and_completes_with_all() {
    let server = TestServer::ready(config());
    let body = generation(r#","width":64,"height":64,"steps":2,"seed":41,"num_images":3"#);
    let created = submit(&server.url, &body);
    let transcript = stream(&server.url, &created.sse_url, &[]);
    let expected = ["queued", "started"]
        .into_iter()
        .chain(["progress", "progress", "image"].repeat(3))
        .chain(["complete"]);
    assert_eq!(transcript.types(), expected.collect::<Vec<_>>());
    assert_eq!(transcript.marker(), "[DONE]");
    let events = transcript.events();
    let JobEvent::Started { params } = &events[1] else {
        panic!()
    };
    assert_eq!((params.seed, params.num_images), (41, 3));
    let steps: Vec<(u32, u32)> = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Progress { step, total, .. } => Some((*step, *total)),
            _ => None,
        })
        .collect();
    assert_eq!(steps, [(1, 6), (2, 6), (3, 6), (4, 6), (5, 6), (6, 6)]);
    let images: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Image(image) => Some(image.clone()),
            _ => None,
        })
        .collect();
    for (i, image) in images.iter().enumerate() {
        assert_eq!((image.index, image.seed), (i as u32, 41 + i as u64));
        assert_eq!(png_size(&image.image), (64, 64));
        let parameters = png_parameters_text(&image.image);
        assert!(
            parameters.contains(&format!("Seed: {}", 41 + i)),
            "{parameters}"
        );
    }
    assert_ne!(images[0].image, images[1].image);
    let JobEvent::Complete(result) = events.last().unwrap() else {
        panic!()
    };
    assert_eq!((result.seed, &result.image), (41, &images[0].image));
    assert_eq!(result.images, images);

    let status: JobStatus = get(&server.url, &format!("/v1/jobs/{}", created.job_id)).json();
    assert_eq!(status.state, JobState::Completed);
    assert_eq!((status.step, status.total), (Some(6), Some(6)));
    assert_eq!(status.params.num_images, 3);
    assert_eq!(status.result.as_ref(), Some(result));

    // A job of one image has no `image` event and no `images` list.
    let created = submit(&server.url, &generation(r#","steps":1,"num_images":1"#));
    let transcript = stream(&server.url, &created.sse_url, &[]);
    assert_eq!(
        transcript.types(),
        ["queued", "started", "progress", "complete"]
    );
    let complete = &transcript.messages[3].data;
    assert!(!complete.contains("images"), "{complete}");
}

/// Cancelling a batch stops the image being made; those already finished
/// stay in their `image` events.
#[test]
fn cancelling_a_batch_ends_it_after_the_images_already_made() {
    let server = TestServer::start(config(), fake("step_ms=30"));
    server.wait_ready();
    let body = generation(r#","width":64,"height":64,"steps":3,"seed":5,"num_images":4"#);
    let created = submit(&server.url, &body);
    let path = format!("/v1/jobs/{}", created.job_id);
    wait_until(Duration::from_secs(10), || {
        get(&server.url, &path).json::<JobStatus>().step >= Some(4)
    });
    assert!(delete(&server.url, &path).status < 300);
    let transcript = stream(&server.url, &created.sse_url, &[]);
    assert_cancelled(&transcript, CancelReason::Client);
    let types = transcript.types();
    assert_eq!(
        types.iter().filter(|t| *t == "image").count(),
        1,
        "{types:?}"
    );
    let status: JobStatus = get(&server.url, &path).json();
    assert_eq!((status.state, status.result), (JobState::Cancelled, None));
}

#[test]
fn previews_come_only_when_asked_and_never_on_the_last_step() {
    let server = TestServer::start(config(), fake("step_ms=40"));
    server.wait_ready();
    let body = generation(r#","width":96,"height":64,"steps":4,"seed":7,"preview":true"#);
    let created = submit(&server.url, &body);
    let live = previews(&stream(&server.url, &created.sse_url, &[]).events());
    assert_eq!(live.len(), 4);
    assert!(
        live[..3].iter().any(|(_, size)| *size == Some((96, 64))),
        "{live:?}"
    );
    assert_eq!(live[3], (4, None));
    // Replay keeps only the newest preview.
    let replayed = previews(&stream(&server.url, &created.sse_url, &[]).events());
    assert_eq!(
        replayed,
        [(1, None), (2, None), (3, Some((96, 64))), (4, None)]
    );

    let created = submit(&server.url, &generation(r#","steps":3,"preview":null"#));
    let without = previews(&stream(&server.url, &created.sse_url, &[]).events());
    assert_eq!(without, [(1, None), (2, None), (3, None)]);
}

#[test]
fn a_seed_is_chosen_and_reported_when_absent() {
    let server = TestServer::ready(config());
    let created = submit(
        &server.url,
        &generation(r#","width":64,"height":64,"steps":1,"seed":null"#),
    );
    let events = stream(&server.url, &created.sse_url, &[]).events();
    let JobEvent::Started { params } = &events[1] else {
        panic!()
    };
    let JobEvent::Complete(result) = events.last().unwrap() else {
        panic!()
    };
    assert_eq!(params.seed, result.seed);
    assert_eq!(params.steps, 1);
}

#[test]
fn defaults_come_from_the_preset() {
    let mut config = config();
    config.preset = sd_core::presets::find("turbo");
    let server = TestServer::ready(config);
    let info = get(&server.url, "/v1/info").value();
    assert_eq!(info["preset"], "turbo");
    assert_eq!(info["defaults"]["steps"], 1);
    assert_eq!(info["defaults"]["guidance_scale"], 0.0);
    assert_eq!(info["defaults"]["scheduler"], "euler_a");
    let created = submit(&server.url, &generation(""));
    let status: JobStatus = get(&server.url, &format!("/v1/jobs/{}", created.job_id)).json();
    assert_eq!((status.params.width, status.params.steps), (512, 1));
}

#[test]
fn many_clients_follow_one_job_and_a_late_one_replays_it() {
    let server = TestServer::start(config(), fake("step_ms=15"));
    server.wait_ready();
    let created = submit(
        &server.url,
        &generation(r#","width":64,"height":64,"steps":12"#),
    );
    let followers: Vec<_> = (0..3)
        .map(|_| {
            let url = server.url.clone();
            let path = created.sse_url.clone();
            std::thread::spawn(move || stream(&url, &path, &[]))
        })
        .collect();
    let transcripts: Vec<_> = followers.into_iter().map(|t| t.join().unwrap()).collect();
    let late = stream(&server.url, &created.sse_url, &[]);
    for t in transcripts.iter().chain([&late]) {
        assert_eq!(t.messages, transcripts[0].messages);
        assert_eq!(t.terminal_count(), 1);
        assert_eq!(t.marker(), "[DONE]");
    }
    assert_eq!(late.types().len(), 1 + 1 + 12 + 1);

    let resumed = stream(&server.url, &created.sse_url, &[("Last-Event-ID", "12")]);
    assert_eq!(resumed.types(), ["progress", "complete"]);
    assert_eq!(resumed.messages[0].id.as_deref(), Some("13"));
    let after_the_end = stream(&server.url, &created.sse_url, &[("Last-Event-ID", "14")]);
    assert!(after_the_end.messages.is_empty(), "{after_the_end:?}");
    let whole = stream(&server.url, &created.sse_url, &[("Last-Event-ID", " ")]);
    assert_eq!(whole.messages, late.messages);
}

/// A `Last-Event-ID` that no event of the job had is refused by name: not a
/// number (400), or a number past the end of the log, however large (409,
/// never wrapping to a replay from the start).
#[test]
fn a_last_event_id_that_was_never_sent_is_refused() {
    let server = TestServer::ready(config());
    let created = submit(
        &server.url,
        &generation(r#","width":64,"height":64,"steps":2"#),
    );
    let done = stream(&server.url, &created.sse_url, &[]);
    assert_eq!(done.types().len(), 5);
    let max = usize::MAX.to_string();
    for (id, status, code) in [
        ("abc", 400, "invalid_request"),
        ("-1", 400, "invalid_request"),
        ("1.5", 400, "invalid_request"),
        ("0x3", 400, "invalid_request"),
        ("18446744073709551616", 409, "event_not_logged"),
        (max.as_str(), 409, "event_not_logged"),
        ("5", 409, "event_not_logged"),
        ("99", 409, "event_not_logged"),
    ] {
        let resp = request(
            "GET",
            &server.url,
            &created.sse_url,
            &[("Last-Event-ID", id)],
            None,
        );
        assert_eq!(resp.status, status, "{id}: {}", resp.body);
        let (got, field) = resp.error();
        assert_eq!(
            (got.as_str(), field.as_deref()),
            (code, Some("Last-Event-ID")),
            "{id}"
        );
    }
    let resp = request(
        "GET",
        &server.url,
        &created.sse_url,
        &[("Last-Event-ID", "5")],
        None,
    );
    assert!(
        resp.body.contains("its last event so far is 4"),
        "{}",
        resp.body
    );
}

#[test]
fn idle_streams_get_keep_alive_comments() {
    let mut config = config();
    config.sse_keep_alive = Duration::from_millis(30);
    let server = TestServer::start(config, fake("step_ms=150"));
    server.wait_ready();
    let created = submit(
        &server.url,
        &generation(r#","width":64,"height":64,"steps":2"#),
    );
    let transcript = stream(&server.url, &created.sse_url, &[]);
    assert!(transcript.comments >= 2, "{transcript:?}");
    assert_eq!(transcript.marker(), "[DONE]");
}

#[test]
fn cancel_takes_a_queued_job_out_at_once_and_stops_a_running_one_within_a_step() {
    let server = TestServer::start(config(), fake("step_ms=40"));
    server.wait_ready();
    let running = submit(
        &server.url,
        &generation(r#","width":64,"height":64,"steps":100"#),
    );
    let queued = submit(
        &server.url,
        &generation(r#","width":64,"height":64,"steps":3"#),
    );
    let running_path = format!("/v1/jobs/{}", running.job_id);
    let queued_path = format!("/v1/jobs/{}", queued.job_id);
    wait_until(Duration::from_secs(5), || {
        get(&server.url, &running_path)
            .json::<JobStatus>()
            .step
            .is_some()
    });
    let status: JobStatus = get(&server.url, &queued_path).json();
    assert_eq!(
        (status.state, status.queue_position),
        (JobState::Queued, Some(1))
    );

    let follower = {
        let url = server.url.clone();
        let path = running.sse_url.clone();
        std::thread::spawn(move || stream(&url, &path, &[]))
    };
    let resp = delete(&server.url, &queued_path);
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.json::<JobStatus>().state, JobState::Cancelled);
    let transcript = stream(&server.url, &queued.sse_url, &[]);
    assert_eq!(transcript.types(), ["queued", "cancelled"]);
    assert_eq!(transcript.marker(), "[CANCELLED]");

    let resp = delete(&server.url, &running_path);
    assert_eq!(resp.status, 202, "{}", resp.body);
    let status: JobStatus = resp.json();
    assert!(status.cancel_requested);
    let step_at_cancel = status.step.unwrap();
    let transcript = follower.join().unwrap();
    assert_eq!(transcript.terminal_count(), 1);
    assert_cancelled(&transcript, CancelReason::Client);
    let last_step = transcript
        .events()
        .iter()
        .filter_map(|e| match e {
            JobEvent::Progress { step, .. } => Some(*step),
            _ => None,
        })
        .max()
        .unwrap();
    assert!(
        last_step <= step_at_cancel + 1,
        "ran {last_step} steps after a cancel at {step_at_cancel}"
    );

    let resp = delete(&server.url, &running_path);
    assert_eq!(resp.status, 409);
    assert_eq!(resp.error().0, "job_finished");
    let status: JobStatus = get(&server.url, &running_path).json();
    assert_eq!(status.state, JobState::Cancelled);
    assert!(!status.cancel_requested);
}

#[test]
fn a_failing_generation_ends_with_an_error_event_and_the_error_marker() {
    let server = TestServer::start(config(), fake("fail_prompt=explode"));
    server.wait_ready();
    let body = r#"{"operation":"image_generation","prompt":"explode please","width":64,"height":64,"steps":2}"#;
    let created = submit(&server.url, body);
    let transcript = stream(&server.url, &created.sse_url, &[]);
    assert_eq!(
        transcript.types(),
        ["queued", "started", "progress", "progress", "error"]
    );
    let JobEvent::Error(error) = transcript.events().pop().unwrap() else {
        panic!()
    };
    assert_eq!(error.code, ErrorCode::GenerationFailed);
    assert_eq!(transcript.marker(), format!("[ERROR] {}", error.message));
    let status: JobStatus = get(&server.url, &format!("/v1/jobs/{}", created.job_id)).json();
    assert_eq!(status.state, JobState::Failed);
    assert_eq!(status.error.unwrap(), error);
    assert!(status.result.is_none());

    let ok = submit(
        &server.url,
        &generation(r#","width":64,"height":64,"steps":1"#),
    );
    assert_eq!(stream(&server.url, &ok.sse_url, &[]).marker(), "[DONE]");
}

#[test]
fn finished_jobs_expire_after_the_retention_period() {
    let mut config = config();
    config.job_retention = Duration::from_millis(300);
    let server = TestServer::ready(config);
    let ids: Vec<_> = (0..3)
        .map(|_| {
            submit(
                &server.url,
                &generation(r#","width":64,"height":64,"steps":1"#),
            )
        })
        .collect();
    for created in &ids {
        stream(&server.url, &created.sse_url, &[]);
    }
    assert_eq!(
        get(&server.url, &format!("/v1/jobs/{}", ids[0].job_id)).status,
        200
    );
    wait_until(Duration::from_secs(5), || server.state.jobs().is_empty());
    let resp = get(&server.url, &format!("/v1/jobs/{}", ids[0].job_id));
    assert_eq!((resp.status, resp.error().0.as_str()), (404, "not_found"));
    assert_eq!(get(&server.url, &ids[0].sse_url).status, 404);
    assert_eq!(get(&server.url, "/v1/info").value()["jobs"]["retained"], 0);
}

/// The finished-job cap holds at every moment, not only when the reaper runs:
/// each new job and each job that ends drops the oldest finished ones.
#[test]
fn the_finished_job_cap_holds_as_jobs_come_and_end() {
    let mut config = config();
    config.max_finished_jobs = 3;
    let server = TestServer::start(config, fake("step_ms=50"));
    server.wait_ready();
    let body = generation(r#","width":64,"height":64,"steps":20"#);
    let mut ids = Vec::new();
    for _ in 0..12 {
        let created = submit(&server.url, &body);
        assert!(delete(&server.url, &format!("/v1/jobs/{}", created.job_id)).status < 300);
        ids.push(created.job_id);
        assert!(
            server.state.jobs().len() <= 4,
            "3 finished and the running one"
        );
    }
    wait_until(Duration::from_secs(5), || !server.state.is_busy());
    assert_eq!(server.state.jobs().len(), 3);
    let known: Vec<bool> = ids
        .iter()
        .map(|id| get(&server.url, &format!("/v1/jobs/{id}")).status == 200)
        .collect();
    assert_eq!(known.iter().filter(|k| **k).count(), 3);
    assert!(known[11], "the newest job is kept");
}

/// 50 jobs from 5 clients at once, some cancelled: every accepted job ends in
/// exactly one terminal event, and the registry empties once they expire.
#[test]
fn fifty_concurrent_jobs_each_end_exactly_once_and_then_expire() {
    let mut config = config();
    config.max_queue = 8;
    config.job_retention = Duration::from_millis(500);
    let server = TestServer::start(config, fake("step_ms=1"));
    server.wait_ready();
    let clients: Vec<_> = (0..5)
        .map(|client| {
            let url = server.url.clone();
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                let mut rejected = 0;
                for n in 0..10 {
                    let body =
                        generation(&format!(r#","width":64,"height":64,"steps":3,"seed":{n}"#));
                    let created = loop {
                        let resp = post_json(&url, "/v1/jobs", &body);
                        match resp.status {
                            202 => break resp.json::<sd_contract::JobCreated>(),
                            503 => {
                                assert_eq!(resp.error().0, "queue_full");
                                assert!(resp.header("retry-after").is_some());
                                rejected += 1;
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            other => panic!("unexpected {other}: {}", resp.body),
                        }
                    };
                    if (client + n) % 7 == 0 {
                        let resp = delete(&url, &format!("/v1/jobs/{}", created.job_id));
                        assert!([200, 202, 409].contains(&resp.status), "{}", resp.body);
                    }
                    let transcript = stream(&url, &created.sse_url, &[]);
                    assert_eq!(transcript.terminal_count(), 1, "{transcript:?}");
                    assert!(sd_contract::completion_markers::is_completion_marker(
                        transcript.marker()
                    ));
                    outcomes.push((created.job_id, transcript.types().pop().unwrap()));
                }
                (outcomes, rejected)
            })
        })
        .collect();
    let mut outcomes = HashMap::new();
    for client in clients {
        let (done, _rejected) = client.join().unwrap();
        for (id, last) in done {
            assert!(
                outcomes.insert(id, last).is_none(),
                "a job id was given twice"
            );
        }
    }
    assert_eq!(outcomes.len(), 50);
    assert!(outcomes
        .values()
        .all(|t| t == "complete" || t == "cancelled"));
    assert!(outcomes.values().any(|t| t == "complete"));
    for (id, last) in &outcomes {
        let state = get(&server.url, &format!("/v1/jobs/{id}"))
            .json::<JobStatus>()
            .state;
        let expected = if last == "complete" {
            JobState::Completed
        } else {
            JobState::Cancelled
        };
        assert_eq!(state, expected);
    }
    wait_until(Duration::from_secs(10), || server.state.jobs().is_empty());
    let info = get(&server.url, "/v1/info").value();
    assert_eq!(
        info["jobs"],
        serde_json::json!({"queued": 0, "running": 0, "retained": 0})
    );
}

#[test]
fn the_listing_shows_the_running_job_the_queue_and_the_newest_finished_without_images() {
    let server = TestServer::start(config(), fake("step_ms=40"));
    server.wait_ready();
    let done = submit(&server.url, &generation(r#","steps":1,"seed":1"#));
    assert_eq!(stream(&server.url, &done.sse_url, &[]).marker(), "[DONE]");
    let running = submit(&server.url, &generation(r#","steps":150"#));
    wait_until(Duration::from_secs(10), || {
        server.state.status(&running.job_id).unwrap().state == JobState::Running
    });
    let queued = submit(&server.url, &generation(r#","steps":2,"num_images":2"#));

    let listing = get(&server.url, "/v1/jobs");
    assert_eq!(listing.status, 200, "{}", listing.body);
    assert!(
        !listing.body.contains("\"image\""),
        "a listing carries no image: {}",
        listing.body
    );
    let list: sd_contract::JobList = listing.json();
    let rows: Vec<_> = list
        .jobs
        .iter()
        .map(|j| (j.job_id.as_str(), j.state, j.queue_position))
        .collect();
    assert_eq!(
        rows,
        [
            (running.job_id.as_str(), JobState::Running, None),
            (queued.job_id.as_str(), JobState::Queued, Some(1)),
            (done.job_id.as_str(), JobState::Completed, None),
        ]
    );
    assert_eq!(list.queued, 1);
    assert_eq!(list.jobs[0].total, Some(150));
    assert_eq!(list.jobs[1].params.num_images, 2);
    assert_eq!(list.jobs[2].step, Some(1));

    assert_eq!(
        delete(&server.url, &format!("/v1/jobs/{}", queued.job_id)).status,
        200
    );
    assert_eq!(
        delete(&server.url, &format!("/v1/jobs/{}", running.job_id)).status,
        202
    );
    wait_until(Duration::from_secs(10), || {
        get(&server.url, "/v1/jobs")
            .json::<sd_contract::JobList>()
            .jobs
            .iter()
            .all(|j| j.state.is_terminal())
    });
}

#[test]
fn the_listing_needs_the_api_key() {
    let mut config = config();
    config.api_key = Some("k".into());
    let server = TestServer::ready(config);
    assert_eq!(get(&server.url, "/v1/jobs").status, 401);
}

#[test]
fn the_output_dir_keeps_every_image_with_its_parameters() {
    let dir = std::env::temp_dir().join(format!("sd-worker-output-{:016x}", rand::random::<u64>()));
    let mut config = config();
    config.output_dir = Some(dir.clone());
    let server = TestServer::ready(config);
    let created = submit(
        &server.url,
        &generation(r#","steps":2,"seed":40,"num_images":2,"width":64,"height":64"#),
    );
    assert_eq!(
        stream(&server.url, &created.sse_url, &[]).marker(),
        "[DONE]"
    );

    let days: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(days.len(), 1, "one folder per day: {days:?}");
    let mut files: Vec<String> = std::fs::read_dir(&days[0])
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "{files:?}");
    for (index, seed) in [(0, 40), (1, 41)] {
        let stem = format!("-{seed}-{}-{index}", created.job_id);
        let png = files
            .iter()
            .find(|f| f.ends_with(&format!("{stem}.png")))
            .unwrap_or_else(|| panic!("no image {stem} in {files:?}"));
        let bytes = std::fs::read(days[0].join(png)).unwrap();
        use base64::Engine as _;
        let text = png_parameters_text(&base64::engine::general_purpose::STANDARD.encode(&bytes));
        assert!(text.contains(&format!("Seed: {seed}")), "{text}");
        let json: serde_json::Value = serde_json::from_slice(
            &std::fs::read(days[0].join(png.replace(".png", ".json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(json["seed"], seed);
        assert_eq!(json["job_id"], created.job_id.as_str());
        assert_eq!(json["params"]["prompt"], "a lighthouse at dusk");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
