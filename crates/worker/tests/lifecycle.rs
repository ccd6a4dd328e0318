//! Start-up, shutdown and the hive callbacks, against the fake engine on a
//! free port.

mod common;

use std::time::Duration;

use common::*;
use sd_contract::event::CancelReason;
use sd_contract::{WorkerReady, WorkerStatus};
use sd_worker::state::Phase;

#[test]
fn health_answers_at_once_and_ready_turns_200_after_a_slow_load() {
    let server = TestServer::start(config(), fake("load_ms=400"));
    assert_eq!(get(&server.url, "/health").status, 200);
    let ready = get(&server.url, "/ready");
    assert_eq!(ready.status, 503);
    assert_eq!(ready.value()["state"], "loading");
    let refused = post_json(&server.url, "/v1/jobs", &generation(""));
    assert_eq!(
        (refused.status, refused.error().0.as_str()),
        (503, "not_ready")
    );
    server.wait_ready();
    assert_eq!(get(&server.url, "/ready").value()["ready"], true);
}

#[test]
fn a_model_that_fails_to_load_keeps_ready_at_503_with_the_error() {
    let server = TestServer::start(
        config(),
        fake("load_error=no unet/diffusion_pytorch_model.safetensors"),
    );
    wait_until(Duration::from_secs(5), || {
        matches!(server.state.phase(), Phase::Failed(_))
    });
    let ready = get(&server.url, "/ready");
    assert_eq!(ready.status, 503);
    assert_eq!(ready.value()["state"], "failed");
    assert!(ready.value()["reason"]
        .as_str()
        .unwrap()
        .contains("diffusion_pytorch_model"));
    assert_eq!(get(&server.url, "/health").status, 200);
}

/// Follows a job on another thread.
fn follow(url: &str, path: &str) -> std::thread::JoinHandle<Transcript> {
    let (url, path) = (url.to_string(), path.to_string());
    std::thread::spawn(move || stream(&url, &path, &[]))
}

/// Submits a 64×64 job of `running_steps` steps, then a 2-step one that
/// waits behind it, and follows both streams.
fn running_and_waiting(url: &str, running_steps: u32) -> [std::thread::JoinHandle<Transcript>; 2] {
    let running = submit(
        url,
        &generation(&format!(
            r#","width":64,"height":64,"steps":{running_steps}"#
        )),
    );
    let waiting = submit(url, &generation(r#","width":64,"height":64,"steps":2"#));
    [follow(url, &running.sse_url), follow(url, &waiting.sse_url)]
}

#[test]
fn shutdown_cancels_running_and_waiting_jobs_and_ends_every_stream() {
    let mut server = TestServer::start(config(), fake("step_ms=20"));
    server.wait_ready();
    let followers = running_and_waiting(&server.url, 150);
    wait_until(Duration::from_secs(5), || server.state.is_busy());
    server.shutdown();
    for follower in followers {
        let transcript = follower.join().unwrap();
        assert_eq!(transcript.terminal_count(), 1);
        assert_cancelled(&transcript, CancelReason::Shutdown);
    }
    assert_eq!(
        server.state.readiness(false).1.state,
        sd_contract::ReadinessState::Stopping
    );
}

#[test]
fn with_drain_the_running_job_finishes_before_the_worker_exits() {
    let mut config = config();
    config.drain_on_shutdown = true;
    let mut server = TestServer::start(config, fake("step_ms=20"));
    server.wait_ready();
    let followers = running_and_waiting(&server.url, 15);
    wait_until(Duration::from_secs(5), || server.state.is_busy());
    server.shutdown();
    let [running, waiting] = followers.map(|f| f.join().unwrap());
    assert_eq!(running.marker(), "[DONE]");
    assert_eq!(
        running.types().iter().filter(|t| *t == "progress").count(),
        15
    );
    assert_eq!(waiting.marker(), "[CANCELLED]");
}

#[test]
fn the_hive_hears_heartbeats_the_ready_callback_and_a_last_stopping_heartbeat() {
    let hive_runtime = tokio::runtime::Runtime::new().unwrap();
    let (hive_url, hive) = start_hive(&hive_runtime, 2);
    let mut config = config();
    config.callback_url = Some(hive_url);
    config.heartbeat_interval = Duration::from_millis(40);
    config.device = 1;
    let mut server = TestServer::start(config, fake("load_ms=200,step_ms=20"));
    server.wait_ready();
    wait_until(Duration::from_secs(10), || {
        !hive.lock().unwrap().ready.is_empty()
    });
    let created = submit(
        &server.url,
        &generation(r#","width":64,"height":64,"steps":15"#),
    );
    stream(&server.url, &created.sse_url, &[]);
    std::thread::sleep(Duration::from_millis(100));
    server.shutdown();

    let hive = hive.lock().unwrap();
    assert_eq!(
        hive.ready.len(),
        1,
        "the ready callback is sent once, after retries"
    );
    assert_eq!(
        hive.ready[0],
        WorkerReady {
            worker_id: "test-worker".into(),
            url: server.url.clone(),
            model_ref: "fake/model".into(),
            backend: "cpu".into(),
            device: 1,
        }
    );
    let statuses: Vec<WorkerStatus> = hive.heartbeats.iter().map(|h| h.worker.status).collect();
    assert_eq!(
        statuses.first(),
        Some(&WorkerStatus::Starting),
        "{statuses:?}"
    );
    assert_eq!(
        statuses.last(),
        Some(&WorkerStatus::Stopping),
        "{statuses:?}"
    );
    for status in [WorkerStatus::Ready, WorkerStatus::Busy] {
        assert!(statuses.contains(&status), "{statuses:?}");
    }
    let beat = &hive.heartbeats[0];
    assert_eq!(beat.worker.id, "test-worker");
    assert_eq!(beat.worker.model_id, "fake/model");
    assert_eq!(beat.worker.implementation, "sd-worker-cpu");
    assert_eq!(beat.worker.port, server.state.addr().port());
    assert!(
        humantime::parse_rfc3339(&beat.timestamp).is_ok(),
        "{}",
        beat.timestamp
    );
}

#[test]
fn a_hive_that_is_down_never_stops_the_worker() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut config = config();
    config.callback_url = Some(url);
    config.heartbeat_interval = Duration::from_millis(20);
    let mut server = TestServer::start(config, fake(""));
    server.wait_ready();
    std::thread::sleep(Duration::from_millis(100));
    let created = submit(
        &server.url,
        &generation(r#","width":64,"height":64,"steps":2"#),
    );
    assert_eq!(
        stream(&server.url, &created.sse_url, &[]).marker(),
        "[DONE]"
    );
    server.shutdown();
}
