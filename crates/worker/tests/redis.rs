//! Several worker processes on one shared queue (`--redis-url`), against a
//! real `redis-server` each test starts on a free port (CI installs Debian's;
//! a machine without it fails here, naming the package).

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sd_contract::event::CancelReason;
use sd_contract::{JobCreated, JobEvent, JobState, JobStatus};

/// A `redis-server` of the test's own; killed when dropped.
struct RedisServer {
    port: u16,
    args: Vec<String>,
    child: Option<Child>,
    dir: PathBuf,
}

impl RedisServer {
    /// An in-memory server, as a cache runs it.
    fn start() -> Self {
        Self::on_port(free_port())
    }

    /// An in-memory server on `port`.
    fn on_port(port: u16) -> Self {
        Self::launch(port, &["--save", "", "--appendonly", "no"])
    }

    /// A server that logs every write to its append-only file before it
    /// answers, so it loses nothing when it stops and starts again.
    fn durable() -> Self {
        Self::launch(
            free_port(),
            &[
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ],
        )
    }

    fn launch(port: u16, persistence: &[&str]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("sd-worker-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut args: Vec<String> = ["--port", &port.to_string(), "--bind", "127.0.0.1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(persistence.iter().map(|s| s.to_string()));
        args.extend(["--dir".to_string(), dir.to_string_lossy().into_owned()]);
        let mut server = Self {
            port,
            args,
            child: None,
            dir,
        };
        server.restart();
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server (again) on its port, and waits until it answers.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): these tests need Debian's redis-server \
                     package (`apt-get install redis-server`; .ci/run installs it)"
                )
            });
        self.child = Some(child);
        wait_until(Duration::from_secs(10), || self.ping());
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut socket) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = socket.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 7];
        socket.write_all(b"PING\r\n").is_ok()
            && socket.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// Stops the server as an operator would (SIGTERM: it flushes its file).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A worker process with the fake engine on the shared queue.
fn fake_worker(redis: &RedisServer, id: &str, fake: &str, extra: &[&str]) -> WorkerProcess {
    let url = redis.url();
    let mut args = vec![
        "--model",
        "fake-model",
        "--fake-engine",
        fake,
        "--redis-url",
        &url,
        "--worker-id",
        id,
    ];
    args.extend_from_slice(extra);
    let worker = WorkerProcess::spawn(&args, &[]);
    worker.wait_ready();
    worker
}

fn status(url: &str, id: &str) -> JobStatus {
    let resp = get(url, &format!("/v1/jobs/{id}"));
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.json()
}

/// Waits until the job has ended and returns its status.
fn ended(url: &str, id: &str, limit: Duration) -> JobStatus {
    let start = Instant::now();
    loop {
        let status = status(url, id);
        if status.state.is_terminal() {
            return status;
        }
        assert!(start.elapsed() < limit, "job {id} still {:?}", status.state);
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn metric(url: &str, name: &str) -> f64 {
    let text = get(url, "/metrics").body;
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn three_workers_share_300_jobs_each_ending_once() {
    let redis = RedisServer::start();
    let workers: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|id| fake_worker(&redis, id, "step_ms=2", &["--max-queue", "400"]))
        .collect();
    let mut jobs = Vec::new();
    for i in 0..300 {
        let url = &workers[i % 3].url;
        let created = submit(
            url,
            &generation(&format!(r#","steps":2,"width":64,"height":64,"seed":{i}"#)),
        );
        jobs.push(created);
    }
    let mut ran_on = std::collections::HashMap::<String, usize>::new();
    for (i, job) in jobs.iter().enumerate() {
        let status = ended(
            &workers[(i + 1) % 3].url,
            &job.job_id,
            Duration::from_secs(120),
        );
        assert_eq!(status.state, JobState::Completed, "{status:?}");
        assert_eq!(status.result.as_ref().unwrap().seed, i as u64);
        *ran_on.entry(status.worker_id.clone().unwrap()).or_default() += 1;
    }
    // Every job's stream, replayed from a worker that did not take it,
    // holds exactly one terminal event, then [DONE].
    for (i, job) in jobs.iter().enumerate() {
        let transcript = stream(&workers[(i + 2) % 3].url, &job.sse_url, &[]);
        assert_eq!(transcript.terminal_count(), 1, "{:?}", transcript.types());
        assert_eq!(
            transcript.types().first().map(String::as_str),
            Some("queued")
        );
        assert_eq!(transcript.marker(), "[DONE]");
    }
    eprintln!("jobs per worker: {ran_on:?}");
    assert_eq!(ran_on.len(), 3, "work spread over all three: {ran_on:?}");
    assert!(ran_on.values().all(|&n| n >= 20), "{ran_on:?}");
    let completed: f64 = workers
        .iter()
        .map(|w| metric(&w.url, "sd_worker_jobs_ended_total{outcome=\"completed\"}"))
        .sum();
    assert_eq!(completed, 300.0, "the engines ran each job once");
    let submitted: f64 = workers
        .iter()
        .map(|w| metric(&w.url, "sd_worker_jobs_submitted_total"))
        .sum();
    assert_eq!(submitted, 300.0);
    // The gauge is the shared counter, read every half second.
    wait_until(Duration::from_secs(5), || {
        metric(&workers[0].url, "sd_worker_queue_depth") == 0.0
    });
}

#[test]
fn submit_on_one_worker_stream_on_another_cancel_on_a_third() {
    let redis = RedisServer::start();
    let a = fake_worker(&redis, "a", "step_ms=40", &[]);
    let b = fake_worker(&redis, "b", "step_ms=40", &[]);
    let c = fake_worker(&redis, "c", "step_ms=40", &[]);

    // A short job: the same stream on every worker, ids and all.
    let done = submit(&a.url, &generation(r#","steps":3,"seed":7"#));
    let on_b = stream(&b.url, &done.sse_url, &[]);
    assert_eq!(
        on_b.types(),
        ["queued", "started", "progress", "progress", "progress", "complete"]
    );
    assert_eq!(on_b.marker(), "[DONE]");
    let ids: Vec<_> = on_b.messages.iter().filter_map(|m| m.id.clone()).collect();
    assert_eq!(ids, ["0", "1", "2", "3", "4", "5"]);
    let resumed = stream(&c.url, &done.sse_url, &[("Last-Event-ID", "2")]);
    assert_eq!(resumed.types(), ["progress", "progress", "complete"]);
    assert_eq!(resumed.messages[0].id.as_deref(), Some("3"));
    assert_eq!(
        get_with(&c.url, &done.sse_url, "Last-Event-ID", "6").status,
        409
    );
    assert_eq!(
        get_with(&c.url, &done.sse_url, "Last-Event-ID", "x").status,
        400
    );
    let finished = status(&c.url, &done.job_id);
    assert_eq!(finished.state, JobState::Completed);
    assert!(["a", "b", "c"].contains(&finished.worker_id.as_deref().unwrap()));
    assert_eq!(
        delete(&b.url, &format!("/v1/jobs/{}", done.job_id)).status,
        409
    );
    assert_eq!(get(&b.url, "/v1/jobs/job-unknown").status, 404);

    // A long job, followed on B and cancelled on C while it runs.
    let long = submit(&a.url, &generation(r#","steps":150"#));
    let follower = {
        let (url, path) = (b.url.clone(), long.sse_url.clone());
        std::thread::spawn(move || stream(&url, &path, &[]))
    };
    wait_until(Duration::from_secs(20), || {
        status(&c.url, &long.job_id).step.is_some_and(|s| s >= 2)
    });
    let cancel = delete(&c.url, &format!("/v1/jobs/{}", long.job_id));
    assert_eq!(cancel.status, 202, "{}", cancel.body);
    assert!(cancel.json::<JobStatus>().cancel_requested);
    let transcript = follower.join().unwrap();
    assert_cancelled(&transcript, CancelReason::Client);
    assert_eq!(transcript.terminal_count(), 1);
    let steps = transcript
        .events()
        .iter()
        .filter(|e| matches!(e, JobEvent::Progress { .. }))
        .count();
    assert!(steps < 150, "stopped mid-job, after {steps} steps");
    assert_eq!(status(&a.url, &long.job_id).state, JobState::Cancelled);
}

fn get_with(base: &str, path: &str, header: &str, value: &str) -> Resp {
    request("GET", base, path, &[(header, value)], None)
}

#[test]
fn a_queued_job_cancelled_anywhere_ends_at_once() {
    let redis = RedisServer::start();
    let a = fake_worker(&redis, "a", "step_ms=30", &["--max-queue", "2"]);
    let b = WorkerProcess::spawn(
        &[
            "--model",
            "fake-model",
            "--fake-engine",
            "step_ms=30",
            "--redis-url",
            &redis.url(),
            "--max-queue",
            "2",
        ],
        &[],
    );
    b.wait_ready();
    let busy = submit(&a.url, &generation(r#","steps":100"#));
    let busy_too = submit(&b.url, &generation(r#","steps":100"#));
    wait_until(Duration::from_secs(10), || {
        status(&a.url, &busy.job_id).state == JobState::Running
            && status(&a.url, &busy_too.job_id).state == JobState::Running
    });
    let waiting = submit(&a.url, &generation(r#","steps":2"#));
    let queued = status(&b.url, &waiting.job_id);
    assert_eq!(
        (queued.state, queued.queue_position),
        (JobState::Queued, Some(1))
    );
    let _second = submit(&b.url, &generation(r#","steps":2"#));
    // The queue is global: two wait, so a third is refused on either worker.
    let full = post_json(&a.url, "/v1/jobs", &generation(""));
    assert_eq!(full.status, 503, "{}", full.body);
    assert_eq!(full.error().0, "queue_full");
    let cancelled = delete(&b.url, &format!("/v1/jobs/{}", waiting.job_id));
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(cancelled.json::<JobStatus>().state, JobState::Cancelled);
    let transcript = stream(&a.url, &waiting.sse_url, &[]);
    assert_eq!(transcript.types(), ["queued", "cancelled"]);
    assert_eq!(post_json(&b.url, "/v1/jobs", &generation("")).status, 202);
    for job in [&busy, &busy_too] {
        delete(&a.url, &format!("/v1/jobs/{}", job.job_id));
    }
}

/// The tiny model's image of one job, from a worker of its own (no Redis).
fn reference_image(body: &str) -> String {
    let worker = WorkerProcess::spawn(&["--model", &tiny_model()], &[]);
    worker.wait_ready();
    let created = submit(&worker.url, body);
    match stream(&worker.url, &created.sse_url, &[]).events().last() {
        Some(JobEvent::Complete(result)) => result.image.clone(),
        other => panic!("no image: {other:?}"),
    }
}

fn tiny_model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/tiny-sd15")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_job_whose_worker_is_killed_completes_on_another_with_the_same_image() {
    let body = r#"{"operation":"image_generation","prompt":"a lighthouse at dusk","steps":40,
        "width":64,"height":64,"seed":1234,"scheduler":"euler"}"#;
    let expected = reference_image(body);
    let redis = RedisServer::start();
    let model = tiny_model();
    let url = redis.url();
    let spawn = |id: &str| {
        let worker = WorkerProcess::spawn(
            &[
                "--model",
                &model,
                "--redis-url",
                &url,
                "--worker-id",
                id,
                "--claim-after",
                "1s",
            ],
            &[],
        );
        worker.wait_ready();
        worker
    };
    let mut workers = [Some(spawn("first")), Some(spawn("second"))];
    let created = submit(&workers[0].as_ref().unwrap().url, body);
    let mut victim = None;
    wait_until(Duration::from_secs(60), || {
        let status = status(&workers[1].as_ref().unwrap().url, &created.job_id);
        if status.state == JobState::Running && status.step.is_some_and(|s| s >= 2) {
            victim = status.worker_id;
        }
        victim.is_some()
    });
    let victim = victim.unwrap();
    let index = ["first", "second"]
        .iter()
        .position(|w| *w == victim)
        .unwrap_or_else(|| panic!("ran on {victim}"));
    let mut killed = workers[index].take().unwrap();
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    let survivor = workers[1 - index].take().unwrap();
    let transcript = stream(&survivor.url, &created.sse_url, &[]);
    let events = transcript.events();
    assert_eq!(transcript.terminal_count(), 1, "{:?}", transcript.types());
    assert_eq!(transcript.marker(), "[DONE]");
    let restarted = events
        .iter()
        .position(|e| matches!(e, JobEvent::Restarted { attempt: 2, .. }))
        .unwrap_or_else(|| panic!("no restarted event: {:?}", transcript.types()));
    assert_eq!(events[restarted + 1].name(), "started");
    let JobEvent::Complete(result) = events.last().unwrap() else {
        unreachable!()
    };
    assert_eq!(result.seed, 1234);
    assert_eq!(
        decode_png(&result.image),
        decode_png(&expected),
        "the image a single worker gives"
    );
    let status = status(&survivor.url, &created.job_id);
    assert_ne!(status.worker_id.as_deref(), Some(victim.as_str()));
}

#[test]
fn redis_stopped_and_restarted_under_load_loses_no_accepted_job() {
    let mut redis = RedisServer::durable();
    let a = fake_worker(&redis, "a", "step_ms=20", &["--max-queue", "200"]);
    let b = fake_worker(&redis, "b", "step_ms=20", &["--max-queue", "200"]);
    let submitter = {
        let urls = [a.url.clone(), b.url.clone()];
        std::thread::spawn(move || {
            let mut accepted = Vec::new();
            let mut refused = 0;
            for i in 0..60 {
                let resp = post_json(&urls[i % 2], "/v1/jobs", &generation(r#","steps":4"#));
                match resp.status {
                    202 => accepted.push(resp.json::<JobCreated>()),
                    503 => refused += 1,
                    other => panic!("unexpected {other}: {}", resp.body),
                }
                std::thread::sleep(Duration::from_millis(40));
            }
            (accepted, refused)
        })
    };
    std::thread::sleep(Duration::from_millis(600));
    redis.stop();
    wait_until(Duration::from_secs(10), || {
        get(&a.url, "/ready").status == 503
    });
    let ready = get(&a.url, "/ready").value();
    assert_eq!(ready["state"], "queue_unreachable", "{ready}");
    std::thread::sleep(Duration::from_millis(1000));
    redis.restart();
    wait_until(Duration::from_secs(20), || {
        get(&a.url, "/ready").status == 200
    });
    let (accepted, refused) = submitter.join().unwrap();
    eprintln!(
        "accepted {}, refused while Redis was down {refused}",
        accepted.len()
    );
    assert!(refused > 0, "some submissions met the outage");
    assert!(accepted.len() >= 20);
    for job in &accepted {
        let status = ended(&b.url, &job.job_id, Duration::from_secs(60));
        assert_eq!(status.state, JobState::Completed, "{status:?}");
        let transcript = stream(&a.url, &job.sse_url, &[]);
        assert_eq!(transcript.terminal_count(), 1, "{:?}", transcript.types());
        assert_eq!(transcript.marker(), "[DONE]");
    }
    assert!(metric(&a.url, "sd_worker_redis_errors_total") > 0.0);
}

#[test]
fn a_job_that_kills_its_workers_fails_after_max_attempts() {
    let redis = RedisServer::start();
    let fake = "step_ms=100,abort_prompt=poison";
    let flags = ["--claim-after", "1s", "--max-attempts", "2"];
    let mut first = fake_worker(&redis, "w1", fake, &flags);
    let poison = r#"{"operation":"image_generation","prompt":"a poison pill","steps":3}"#;
    let created = submit(&first.url, poison);
    assert_ne!(
        first.wait_exit(Duration::from_secs(20)),
        0,
        "the poison job killed w1"
    );
    let mut second = fake_worker(&redis, "w2", fake, &flags);
    assert_ne!(
        second.wait_exit(Duration::from_secs(20)),
        0,
        "and w2, on its restart"
    );
    let third = fake_worker(&redis, "w3", fake, &flags);
    let status = ended(&third.url, &created.job_id, Duration::from_secs(20));
    assert_eq!(status.state, JobState::Failed);
    let message = status.error.unwrap().message;
    assert!(message.contains("--max-attempts 2"), "{message}");
    let transcript = stream(&third.url, &created.sse_url, &[]);
    assert_eq!(transcript.terminal_count(), 1);
    assert!(
        transcript.marker().starts_with("[ERROR]"),
        "{}",
        transcript.marker()
    );
    assert!(
        transcript.types().contains(&"restarted".to_string()),
        "{:?}",
        transcript.types()
    );
    // The fleet goes on: the surviving worker runs the next job.
    let next = submit(&third.url, &generation(r#","steps":2"#));
    assert_eq!(
        ended(&third.url, &next.job_id, Duration::from_secs(20)).state,
        JobState::Completed
    );
}

#[test]
fn a_worker_without_redis_is_not_ready_and_refuses_jobs_until_it_comes() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let worker = WorkerProcess::spawn(
        &[
            "--model",
            "fake-model",
            "--fake-engine",
            "",
            "--redis-url",
            &url,
        ],
        &[],
    );
    std::thread::sleep(Duration::from_millis(700));
    let ready = get(&worker.url, "/ready");
    assert_eq!(ready.status, 503);
    assert_eq!(ready.value()["state"], "queue_unreachable");
    let refused = post_json(&worker.url, "/v1/jobs", &generation(""));
    assert_eq!(refused.status, 503);
    assert_eq!(refused.error().0, "queue_unreachable");
    assert!(refused.header("retry-after").is_some());
    let _redis = RedisServer::on_port(port);
    worker.wait_ready();
    let created = submit(&worker.url, &generation(r#","steps":2"#));
    assert_eq!(
        stream(&worker.url, &created.sse_url, &[]).marker(),
        "[DONE]"
    );
}

/// The same job streams the same messages (event names, ids, data but the
/// timings) from a worker alone and through Redis.
#[test]
fn the_stream_through_redis_is_the_stream_of_a_worker_alone() {
    let redis = RedisServer::start();
    let shared = fake_worker(&redis, "shared", "step_ms=5", &[]);
    let alone = WorkerProcess::spawn(
        &["--model", "fake-model", "--fake-engine", "step_ms=5"],
        &[],
    );
    alone.wait_ready();
    let body = generation(r#","steps":3,"seed":11,"num_images":2,"width":64,"height":64"#);
    let messages = |url: &str| {
        let created = submit(url, &body);
        let transcript = stream(url, &created.sse_url, &[]);
        transcript
            .messages
            .iter()
            .map(|m| (m.event.clone(), m.id.clone(), without_timings(&m.data)))
            .collect::<Vec<_>>()
    };
    let through_redis = messages(&shared.url);
    assert_eq!(through_redis.len(), 12, "{through_redis:?}");
    assert_eq!(through_redis, messages(&alone.url));

    // Previews reach every follower; Redis keeps each one (up to the stream's bound).
    let created = submit(&shared.url, &generation(r#","steps":4,"preview":true"#));
    let events = stream(&shared.url, &created.sse_url, &[]).events();
    let previews: Vec<bool> = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Progress { preview, .. } => Some(preview.is_some()),
            _ => None,
        })
        .collect();
    assert_eq!(previews, [true, true, true, false]);
}

fn without_timings(data: &str) -> String {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.remove("timings");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    match serde_json::from_str::<serde_json::Value>(data) {
        Ok(mut value) => {
            strip(&mut value);
            value.to_string()
        }
        Err(_) => data.to_string(),
    }
}

/// A worker told to stop (SIGTERM) leaves its running job to the others:
/// it is taken over and completes, restarted from its first step.
#[test]
fn a_stopped_worker_leaves_its_job_to_another() {
    let redis = RedisServer::start();
    let flags = ["--claim-after", "1s"];
    let mut workers = [
        Some(fake_worker(&redis, "one", "step_ms=40", &flags)),
        Some(fake_worker(&redis, "two", "step_ms=40", &flags)),
    ];
    let created = submit(
        &workers[0].as_ref().unwrap().url,
        &generation(r#","steps":40"#),
    );
    let mut runner = None;
    wait_until(Duration::from_secs(10), || {
        let status = status(&workers[1].as_ref().unwrap().url, &created.job_id);
        runner = status
            .worker_id
            .filter(|_| status.step.is_some_and(|s| s >= 2));
        runner.is_some()
    });
    let index = usize::from(runner.as_deref() == Some("two"));
    let mut stopping = workers[index].take().unwrap();
    stopping.terminate();
    assert_eq!(stopping.wait_exit(Duration::from_secs(20)), 0);
    let survivor = workers[1 - index].take().unwrap();
    let status = ended(&survivor.url, &created.job_id, Duration::from_secs(20));
    assert_eq!(status.state, JobState::Completed);
    assert_ne!(status.worker_id, runner);
    let transcript = stream(&survivor.url, &created.sse_url, &[]);
    assert_eq!(transcript.terminal_count(), 1);
    assert!(transcript.types().contains(&"restarted".to_string()));
    assert_eq!(transcript.marker(), "[DONE]");
}

/// `/metrics` of a worker on Redis parses with a Prometheus text parser and
/// counts Redis errors.
#[test]
fn metrics_of_a_worker_on_redis_parse() {
    let redis = RedisServer::start();
    let worker = fake_worker(&redis, "m", "", &[]);
    let created = submit(&worker.url, &generation(r#","steps":2"#));
    assert_eq!(
        stream(&worker.url, &created.sse_url, &[]).marker(),
        "[DONE]"
    );
    let text = get(&worker.url, "/metrics").body;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert_eq!(value("sd_worker_redis_errors_total"), 0.0);
    assert_eq!(value("sd_worker_jobs_submitted_total"), 1.0);
    assert_eq!(value("sd_worker_queue_depth"), 0.0);
}
