//! `GET /metrics`: Prometheus' text format, read back by a Prometheus text
//! parser (and by Prometheus' own `promtool` where it is installed, as CI
//! installs it), counting what the worker did.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use prometheus_parse::{Scrape, Value};

/// The scrape's samples as `name{label="value",…}` → value, labels sorted.
fn samples(text: &str) -> HashMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = Scrape::parse(lines).expect("the text format parses");
    let mut out = HashMap::new();
    for sample in scrape.samples {
        let mut labels: Vec<_> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        labels.sort();
        let key = if labels.is_empty() {
            sample.metric.clone()
        } else {
            format!("{}{{{}}}", sample.metric, labels.join(","))
        };
        let value = match sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            Value::Histogram(buckets) => {
                for bucket in buckets {
                    let le = if bucket.less_than.is_infinite() {
                        "+Inf".to_string()
                    } else {
                        bucket.less_than.to_string()
                    };
                    out.insert(format!("{key}_bucket{{le={le}}}"), bucket.count);
                }
                continue;
            }
            Value::Summary(_) => continue,
        };
        out.insert(key, value);
    }
    out
}

/// Runs `promtool check metrics` on `text` when promtool is installed.
fn promtool_check(text: &str) {
    use std::io::Write as _;
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("promtool is not installed (Debian: prometheus); skipping its check");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_count_jobs_by_outcome_steps_and_images() {
    let server = TestServer::start(config(), fake("step_ms=5,fail_prompt=explode"));
    server.wait_ready();
    let before = get(&server.url, "/metrics");
    assert_eq!(before.status, 200, "{}", before.body);
    assert_eq!(
        before.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let before = samples(&before.body);
    assert_eq!(before["sd_worker_ready"], 1.0);
    assert_eq!(before["sd_worker_jobs_submitted_total"], 0.0);
    assert_eq!(
        before["sd_worker_jobs_ended_total{outcome=\"completed\"}"],
        0.0
    );
    assert!(before["sd_worker_model_load_seconds"] > 0.0);
    assert_eq!(
        before["sd_worker_info{model=\"fake/model\",version=\"0.1.0\",worker_id=\"test-worker\"}"],
        1.0
    );

    // Two complete (one of three images), one fails, one is cancelled.
    for body in [
        generation(r#","steps":3"#),
        generation(r#","steps":2,"num_images":3"#),
        r#"{"operation":"image_generation","prompt":"explode","steps":2}"#.to_string(),
    ] {
        let job = submit(&server.url, &body);
        let transcript = stream(&server.url, &job.sse_url, &[]);
        assert_eq!(transcript.terminal_count(), 1);
    }
    let slow = TestServer::start(config(), fake("step_ms=60000"));
    slow.wait_ready();
    let job = submit(&slow.url, &generation(""));
    wait_until(Duration::from_secs(10), || {
        get(&slow.url, &format!("/v1/jobs/{}", job.job_id))
            .body
            .contains("\"running\"")
    });
    assert_eq!(
        samples(&get(&slow.url, "/metrics").body)["sd_worker_jobs_running"],
        1.0
    );
    let cancelled = delete(&slow.url, &format!("/v1/jobs/{}", job.job_id));
    assert!(cancelled.status < 300, "{}", cancelled.body);

    let text = get(&server.url, "/metrics").body;
    promtool_check(&text);
    let after = samples(&text);
    assert_eq!(after["sd_worker_jobs_submitted_total"], 3.0);
    assert_eq!(
        after["sd_worker_jobs_ended_total{outcome=\"completed\"}"],
        2.0
    );
    assert_eq!(after["sd_worker_jobs_ended_total{outcome=\"failed\"}"], 1.0);
    assert_eq!(after["sd_worker_images_total"], 4.0);
    // 3 + 2 × 3 + 2 (the failing job fails after its steps): each step is
    // timed once.
    assert_eq!(after["sd_worker_step_duration_seconds_count"], 11.0);
    assert_eq!(
        after["sd_worker_job_duration_seconds_count{outcome=\"completed\"}"],
        2.0
    );
    assert_eq!(after["sd_worker_job_queue_wait_seconds_count"], 3.0);
    assert_eq!(after["sd_worker_queue_depth"], 0.0);

    wait_until(Duration::from_secs(10), || {
        samples(&get(&slow.url, "/metrics").body)
            .get("sd_worker_jobs_ended_total{outcome=\"cancelled\"}")
            == Some(&1.0)
    });
}

#[test]
fn a_full_queue_counts_as_a_rejection() {
    let mut config = config();
    config.max_queue = 1;
    let server = TestServer::start(config, fake("step_ms=60000"));
    server.wait_ready();
    let running = submit(&server.url, &generation(""));
    wait_until(Duration::from_secs(10), || server.state.is_busy());
    let _queued = submit(&server.url, &generation(""));
    let refused = post_json(&server.url, "/v1/jobs", &generation(""));
    assert_eq!(refused.status, 503);
    let now = samples(&get(&server.url, "/metrics").body);
    assert_eq!(
        now["sd_worker_jobs_rejected_total{reason=\"queue_full\"}"],
        1.0
    );
    assert_eq!(now["sd_worker_queue_depth"], 1.0);
    assert_eq!(now["sd_worker_jobs_running"], 1.0);
    delete(&server.url, &format!("/v1/jobs/{}", running.job_id));
}

#[test]
fn metrics_need_the_key_unless_public() {
    let mut locked = config();
    locked.api_key = Some("secret".into());
    let server = TestServer::ready(locked.clone());
    assert_eq!(get(&server.url, "/metrics").status, 401);
    let with_key = request(
        "GET",
        &server.url,
        "/metrics",
        &[("authorization", "Bearer secret")],
        None,
    );
    assert_eq!(with_key.status, 200);

    locked.metrics_public = true;
    let public = TestServer::ready(locked);
    assert_eq!(get(&public.url, "/metrics").status, 200);
    assert_eq!(get(&public.url, "/v1/info").status, 401);
}
