//! The built `sd-worker-cpu` binary, spawned on a free port.
//!
//! These tests select the fake engine with the hidden `--fake-engine` flag (a
//! test aid); `tests/families.rs` runs the same harness on real tiny models.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use sd_contract::event::CancelReason;
use sd_contract::JobEvent;

#[test]
fn the_binary_serves_jobs_configured_from_flags_and_environment() {
    let worker = WorkerProcess::spawn(
        &["--fake-engine", "step_ms=2", "--sd-version", "sd-turbo"],
        &[("SD_WORKER_MAX_QUEUE", "3"), ("SD_WORKER_ID", "env-worker")],
    );
    assert_eq!(get(&worker.url, "/health").status, 200);
    worker.wait_ready();
    let info = get(&worker.url, "/v1/info").value();
    assert_eq!(info["worker_id"], "env-worker");
    assert_eq!(info["model"], "stabilityai/sd-turbo");
    assert_eq!(info["preset"], "sd-turbo");
    assert_eq!(info["backend"], "cpu");
    assert_eq!(info["limits"]["max_queue"], 3);
    assert_eq!(info["defaults"]["steps"], 1);

    let created = submit(
        &worker.url,
        &generation(r#","width":128,"height":64,"steps":3"#),
    );
    let transcript = stream(&worker.url, &created.sse_url, &[]);
    assert_eq!(
        transcript.types(),
        ["queued", "started", "progress", "progress", "progress", "complete"]
    );
    let Some(JobEvent::Complete(result)) = transcript.events().pop() else {
        panic!()
    };
    assert_eq!(png_size(&result.image), (128, 64));
    assert_eq!(transcript.marker(), "[DONE]");
}

#[test]
fn the_binary_requires_the_api_key_when_given_one() {
    let worker = WorkerProcess::spawn(
        &["--fake-engine", "", "--model", "m", "--api-key", "k1"],
        &[],
    );
    worker.wait_ready();
    assert_eq!(get(&worker.url, "/v1/info").status, 401);
    let authed = request(
        "GET",
        &worker.url,
        "/v1/info",
        &[("authorization", "Bearer k1")],
        None,
    );
    assert_eq!(authed.status, 200);
    let body = generation(r#","width":64,"height":64,"steps":1"#);
    let headers = [
        ("authorization", "Bearer k1"),
        ("content-type", "application/json"),
    ];
    let created: sd_contract::JobCreated =
        request("POST", &worker.url, "/v1/jobs", &headers, Some(&body)).json();
    let transcript = stream(
        &worker.url,
        &created.sse_url,
        &[("authorization", "Bearer k1")],
    );
    assert_eq!(transcript.marker(), "[DONE]");
}

#[test]
fn sigterm_cancels_the_running_job_tells_its_stream_and_exits_cleanly() {
    let mut worker = WorkerProcess::spawn(&["--fake-engine", "step_ms=30", "--model", "m"], &[]);
    worker.wait_ready();
    let created = submit(
        &worker.url,
        &generation(r#","width":64,"height":64,"steps":150"#),
    );
    let follower = {
        let (url, path) = (worker.url.clone(), created.sse_url.clone());
        std::thread::spawn(move || stream(&url, &path, &[]))
    };
    let status_path = format!("/v1/jobs/{}", created.job_id);
    wait_until(Duration::from_secs(10), || {
        get(&worker.url, &status_path).value()["step"].is_number()
    });
    worker.terminate();
    let transcript = follower.join().unwrap();
    assert_cancelled(&transcript, CancelReason::Shutdown);
    assert_eq!(worker.wait_exit(Duration::from_secs(10)), 0);
}

/// A cancelled job must not keep its decoded pictures: 40 inpainting jobs with
/// 4096² RGBA pictures (64 MiB each decoded, the picture and its mask), each
/// cancelled as soon as it is accepted, leave the worker's resident memory
/// about where a few such jobs left it (keeping them grew it by 128 MiB a job).
#[test]
fn cancelled_inpainting_jobs_do_not_keep_their_pictures() {
    let worker = WorkerProcess::spawn(&["--fake-engine", "step_ms=20", "--model", "m"], &[]);
    worker.wait_ready();
    let picture = flat_rgba_png_base64(4096, 4096);
    let body = format!(
        r#"{{"operation":"image_inpaint","prompt":"x","init_image":"{picture}","mask_image":"{picture}","width":512,"height":512,"steps":50}}"#
    );
    let submit_and_cancel = |n: usize| {
        for _ in 0..n {
            let created = submit(&worker.url, &body);
            let cancel = delete(&worker.url, &format!("/v1/jobs/{}", created.job_id));
            assert!(cancel.status < 300, "{}", cancel.body);
        }
    };
    submit_and_cancel(4);
    let warm = resident_mib(worker.child.id());
    submit_and_cancel(40);
    let after = resident_mib(worker.child.id());
    assert!(
        after < warm + 400,
        "resident memory grew from {warm} MiB to {after} MiB over 40 cancelled jobs"
    );
    let info = get(&worker.url, "/v1/info").value();
    assert_eq!(info["jobs"]["retained"].as_u64().unwrap(), 44);
}

/// A queued job holds its pictures encoded: a full queue of 16 inpainting jobs
/// with 4096² RGBA pictures (about 70 KB each as PNG, 128 MiB decoded with the
/// mask) behind one running job grows the worker's resident memory by a few
/// MiB, where holding them decoded grew it by 2 GiB.
#[test]
fn queued_inpainting_jobs_hold_their_pictures_encoded() {
    let worker = WorkerProcess::spawn(
        &[
            "--fake-engine",
            "step_ms=60000",
            "--model",
            "m",
            "--max-queue",
            "16",
        ],
        &[],
    );
    worker.wait_ready();
    let picture = flat_rgba_png_base64(4096, 4096);
    let body = format!(
        r#"{{"operation":"image_inpaint","prompt":"x","init_image":"{picture}","mask_image":"{picture}","width":512,"height":512,"steps":2}}"#
    );
    let running = submit(&worker.url, &body);
    wait_until(Duration::from_secs(20), || {
        get(&worker.url, &format!("/v1/jobs/{}", running.job_id)).value()["state"] == "running"
    });
    let one_running = resident_mib(worker.child.id());
    for _ in 0..16 {
        submit(&worker.url, &body);
    }
    let full_queue = resident_mib(worker.child.id());
    assert!(
        full_queue < one_running + 256,
        "resident memory grew from {one_running} MiB to {full_queue} MiB over 16 queued jobs"
    );
    let info = get(&worker.url, "/v1/info").value();
    assert_eq!(info["jobs"]["queued"], 16, "{info}");
}

/// A base64 PNG of one flat colour, RGBA, which compresses to a few dozen KB.
fn flat_rgba_png_base64(width: u32, height: u32) -> String {
    use base64::Engine as _;
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, width, height);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_compression(png::Compression::Best);
    let mut writer = encoder.write_header().unwrap();
    let pixels = [200u8, 120, 40, 255].repeat(width as usize * height as usize);
    writer.write_image_data(&pixels).unwrap();
    writer.finish().unwrap();
    base64::engine::general_purpose::STANDARD.encode(png)
}

/// The resident memory of a process in MiB, from `/proc/<pid>/status`.
fn resident_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024
}

#[test]
fn sigterm_past_the_shutdown_timeout_cancels_a_job_stuck_in_a_step_and_exits() {
    let mut worker = WorkerProcess::spawn(
        &[
            "--fake-engine",
            "step_ms=60000",
            "--model",
            "m",
            "--drain-on-shutdown",
        ],
        &[("SD_WORKER_SHUTDOWN_TIMEOUT", "1s")],
    );
    worker.wait_ready();
    let created = submit(
        &worker.url,
        &generation(r#","width":64,"height":64,"steps":2"#),
    );
    let follower = {
        let (url, path) = (worker.url.clone(), created.sse_url.clone());
        std::thread::spawn(move || stream(&url, &path, &[]))
    };
    let status_path = format!("/v1/jobs/{}", created.job_id);
    wait_until(Duration::from_secs(10), || {
        get(&worker.url, &status_path).value()["state"] == "running"
    });
    let start = std::time::Instant::now();
    worker.terminate();
    worker.wait_for_line("shutdown signal were cancelled");
    let transcript = follower.join().unwrap();
    assert_cancelled(&transcript, CancelReason::Shutdown);
    assert_eq!(transcript.terminal_count(), 1);
    assert_eq!(worker.wait_exit(Duration::from_secs(8)), 0);
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "exited {took:?} after SIGTERM"
    );
}

#[test]
fn the_binary_accepts_the_hive_flags() {
    let hive = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let queen = format!("http://{}", hive.local_addr().unwrap());
    drop(hive);
    let worker = WorkerProcess::spawn(
        &[
            "--fake-engine",
            "",
            "--worker-id",
            "w-7",
            "--model",
            "stable-diffusion-v1-5/stable-diffusion-v1-5",
            "--device",
            "0",
            "--queen-url",
            &queen,
        ],
        &[],
    );
    worker.wait_ready();
    let info = get(&worker.url, "/v1/info").value();
    assert_eq!(info["worker_id"], "w-7");
    assert_eq!(info["preset"], "v1-5");
}

#[test]
fn the_binary_refuses_to_start_without_a_model() {
    let output = Command::new(env!("CARGO_BIN_EXE_sd-worker-cpu"))
        .args(["--port", "0", "--fake-engine", ""])
        .env_remove("SD_WORKER_MODEL")
        .env_remove("SD_WORKER_SD_VERSION")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--model"), "{stderr}");

    let output = Command::new(env!("CARGO_BIN_EXE_sd-worker-cpu"))
        .args(["--sd-version", "v9"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("v1-5, v2-1, xl, turbo, sd-turbo"),
        "{stderr}"
    );
}
