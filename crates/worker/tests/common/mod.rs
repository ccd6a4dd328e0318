//! Test helpers: a worker served in-process on port 0, a blocking HTTP client
//! and a server-sent events reader.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use sd_contract::event::CancelReason;
use sd_contract::{JobCreated, JobEvent, WorkerHeartbeat, WorkerReady};
use sd_worker::engine::fake::{FakeEngine, FakeEngineConfig};
use sd_worker::{AppState, Worker, WorkerConfig};
use serde::de::DeserializeOwned;
use std::sync::{Arc, Mutex};

/// A worker with the fake engine, served on 127.0.0.1 with a free port.
pub struct TestServer {
    pub url: String,
    pub state: AppState,
    runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub fn start(config: WorkerConfig, fake: FakeEngineConfig) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let worker = runtime.block_on(Worker::bind(config)).unwrap();
        let state = worker.state().clone();
        let url = format!("http://{}", worker.addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let done = runtime.spawn(worker.run(FakeEngine::loader(fake), async {
            let _ = stopped.await;
        }));
        Self {
            url,
            state,
            runtime,
            stop: Some(stop),
            done: Some(done),
        }
    }

    /// A ready worker with the default fake engine.
    pub fn ready(config: WorkerConfig) -> Self {
        let server = Self::start(config, fake(""));
        server.wait_ready();
        server
    }

    pub fn wait_ready(&self) {
        wait_until(Duration::from_secs(10), || {
            get(&self.url, "/ready").status == 200
        });
    }

    /// Sends the shutdown signal and waits for `run` to return.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            let result = self
                .runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(15), done).await });
            result.expect("worker did not stop").unwrap().unwrap();
        }
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn fake(spec: &str) -> FakeEngineConfig {
    spec.parse().unwrap()
}

pub fn config() -> WorkerConfig {
    let mut config = WorkerConfig::new("fake/model");
    config.worker_id = "test-worker".into();
    config
}

/// Polls `check` every 10 ms until it holds, or panics after `limit`.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An HTTP response, whatever its status.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn json<T: DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("bad JSON ({e}) in {} response: {}", self.status, self.body))
    }

    pub fn value(&self) -> serde_json::Value {
        self.json()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `(code, field)` of an error body.
    pub fn error(&self) -> (String, Option<String>) {
        let v = self.value();
        let e = &v["error"];
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        (
            e["code"].as_str().unwrap().to_string(),
            e["field"].as_str().map(str::to_string),
        )
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(5))
        .timeout_read(Duration::from_secs(20))
        .build()
}

fn finish(result: Result<ureq::Response, ureq::Error>) -> Resp {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("HTTP transport error: {e}"),
    };
    let status = response.status();
    let headers = response
        .headers_names()
        .into_iter()
        .map(|n| {
            let v = response.header(&n).unwrap_or("").to_string();
            (n, v)
        })
        .collect();
    let mut body = String::new();
    response.into_reader().read_to_string(&mut body).unwrap();
    Resp {
        status,
        headers,
        body,
    }
}

pub fn request(
    method: &str,
    base: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Resp {
    let mut req = agent().request(method, &format!("{base}{path}"));
    for (name, value) in headers {
        req = req.set(name, value);
    }
    finish(match body {
        Some(body) => req.send_string(body),
        None => req.call(),
    })
}

/// Sends `body` as is (a multipart form, say) with `content_type`.
pub fn post_bytes(
    base: &str,
    path: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut req = agent()
        .post(&format!("{base}{path}"))
        .set("content-type", content_type);
    for (name, value) in headers {
        req = req.set(name, value);
    }
    finish(req.send_bytes(body))
}

pub fn get(base: &str, path: &str) -> Resp {
    request("GET", base, path, &[], None)
}

pub fn delete(base: &str, path: &str) -> Resp {
    request("DELETE", base, path, &[], None)
}

pub fn post_json(base: &str, path: &str, body: &str) -> Resp {
    request(
        "POST",
        base,
        path,
        &[("content-type", "application/json")],
        Some(body),
    )
}

/// Submits a generation job; panics unless it is accepted.
pub fn submit(base: &str, body: &str) -> JobCreated {
    let resp = post_json(base, "/v1/jobs", body);
    assert_eq!(resp.status, 202, "{}", resp.body);
    resp.json()
}

pub fn generation(extra: &str) -> String {
    format!(r#"{{"operation":"image_generation","prompt":"a lighthouse at dusk"{extra}}}"#)
}

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sse {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: String,
}

impl Sse {
    pub fn job_event(&self) -> Option<JobEvent> {
        self.event.as_ref()?;
        Some(
            serde_json::from_str(&self.data)
                .unwrap_or_else(|e| panic!("bad event data ({e}): {}", self.data)),
        )
    }
}

/// Everything a stream sends: its events and how many keep-alive comments.
#[derive(Debug, Default)]
pub struct Transcript {
    pub messages: Vec<Sse>,
    pub comments: usize,
}

impl Transcript {
    pub fn events(&self) -> Vec<JobEvent> {
        self.messages.iter().filter_map(Sse::job_event).collect()
    }

    pub fn types(&self) -> Vec<String> {
        self.events().iter().map(|e| e.name().to_string()).collect()
    }

    pub fn terminal_count(&self) -> usize {
        self.events().iter().filter(|e| e.is_terminal()).count()
    }

    /// The data of the last message (the completion marker).
    pub fn marker(&self) -> &str {
        &self.messages.last().expect("empty stream").data
    }
}

/// Asserts that a stream ended with a `cancelled` event for `reason`, then
/// the `[CANCELLED]` marker.
pub fn assert_cancelled(transcript: &Transcript, reason: CancelReason) {
    assert_eq!(
        transcript.events().last().unwrap(),
        &JobEvent::Cancelled { reason }
    );
    assert_eq!(transcript.marker(), "[CANCELLED]");
}

/// Reads a whole stream until the server ends it.
pub fn stream(base: &str, path: &str, headers: &[(&str, &str)]) -> Transcript {
    let mut req = agent().get(&format!("{base}{path}"));
    for (name, value) in headers {
        req = req.set(name, value);
    }
    let response = req.call().unwrap_or_else(|e| panic!("stream {path}: {e}"));
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    read_sse(response.into_reader())
}

pub fn read_sse(reader: impl Read) -> Transcript {
    let mut transcript = Transcript::default();
    let mut current = Sse::default();
    let mut has_data = false;
    for line in BufReader::new(reader).lines() {
        let line = line.unwrap();
        if line.is_empty() {
            if has_data || current.event.is_some() {
                transcript.messages.push(std::mem::take(&mut current));
            }
            has_data = false;
        } else if line.starts_with(':') {
            transcript.comments += 1;
        } else if let Some(v) = line.strip_prefix("event:") {
            current.event = Some(v.trim_start().to_string());
        } else if let Some(v) = line.strip_prefix("id:") {
            current.id = Some(v.trim_start().to_string());
        } else if let Some(v) = line.strip_prefix("data:") {
            if has_data {
                current.data.push('\n');
            }
            current.data.push_str(v.strip_prefix(' ').unwrap_or(v));
            has_data = true;
        }
    }
    transcript
}

/// A base64 PNG of `width`x`height` (RGB noise), as a request's picture.
pub fn png_base64(width: usize, height: usize) -> String {
    use base64::Engine as _;
    let rgb: Vec<u8> = (0..width * height * 3)
        .map(|i| (i * 7 % 256) as u8)
        .collect();
    let png = sd_core::image::encode_png(&rgb, width, height, None).unwrap();
    base64::engine::general_purpose::STANDARD.encode(png)
}

/// Decodes a base64 PNG and returns its size.
pub fn png_size(b64: &str) -> (u32, u32) {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let reader = decoder.read_info().unwrap();
    (reader.info().width, reader.info().height)
}

/// The `parameters` text of a base64 PNG.
pub fn png_parameters_text(b64: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let info = reader.info();
    let latin1 = info
        .uncompressed_latin1_text
        .iter()
        .map(|c| (&c.keyword, c.text.clone()));
    let utf8 = info
        .utf8_text
        .iter()
        .map(|c| (&c.keyword, c.get_text().unwrap()));
    latin1
        .chain(utf8)
        .find(|(keyword, _)| *keyword == "parameters")
        .map(|(_, text)| text)
        .expect("a parameters chunk")
}

/// The `(step, preview size)` of every progress event, each preview checked
/// to be a PNG data URL of the size it states.
pub fn previews(events: &[JobEvent]) -> Vec<(u32, Option<(u32, u32)>)> {
    events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Progress { step, preview, .. } => Some((*step, preview.as_ref())),
            _ => None,
        })
        .map(|(step, preview)| {
            let size = preview.map(|p| {
                let b64 = p
                    .data_url
                    .strip_prefix("data:image/png;base64,")
                    .expect("a PNG data URL");
                let size = png_size(b64);
                assert_eq!(size, (p.width, p.height), "step {step}: stated size");
                size
            });
            (step, size)
        })
        .collect()
}

/// A running worker binary; killed when dropped.
pub struct WorkerProcess {
    pub child: Child,
    pub url: String,
    stderr: mpsc::Receiver<String>,
}

impl WorkerProcess {
    /// Starts the binary with `args` (plus `--port 0`) and `envs`, and waits
    /// for the line that says where it listens.
    pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> WorkerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sd-worker-cpu"))
            .args(["--port", "0"])
            .args(args)
            .envs(envs.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, stderr) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("[worker] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut process = WorkerProcess {
            child,
            url: String::new(),
            stderr,
        };
        let line = process.wait_for_line("listening on http://");
        let start = line.find("http://").unwrap();
        process.url = line[start..].split_whitespace().next().unwrap().to_string();
        process
    }

    pub fn wait_for_line(&mut self, needle: &str) -> String {
        loop {
            match self.stderr.recv_timeout(Duration::from_secs(20)) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("the worker never logged `{needle}`: {e}"),
            }
        }
    }

    pub fn wait_ready(&self) {
        wait_until(Duration::from_secs(20), || {
            get(&self.url, "/ready").status == 200
        });
    }

    pub fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> i32 {
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < limit,
                "the worker did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a test hive received.
#[derive(Default)]
pub struct Received {
    pub ready: Vec<WorkerReady>,
    pub heartbeats: Vec<WorkerHeartbeat>,
    pub failures_left: usize,
}

pub type Hive = Arc<Mutex<Received>>;

async fn on_ready(
    State(hive): State<Hive>,
    Json(body): Json<WorkerReady>,
) -> axum::http::StatusCode {
    let mut hive = hive.lock().unwrap();
    if hive.failures_left > 0 {
        hive.failures_left -= 1;
        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
    }
    hive.ready.push(body);
    axum::http::StatusCode::OK
}

async fn on_heartbeat(State(hive): State<Hive>, Json(body): Json<WorkerHeartbeat>) {
    hive.lock().unwrap().heartbeats.push(body);
}

/// A hive that records callbacks, failing the first `failures` ready calls.
pub fn start_hive(runtime: &tokio::runtime::Runtime, failures: usize) -> (String, Hive) {
    let hive: Hive = Arc::new(Mutex::new(Received {
        failures_left: failures,
        ..Default::default()
    }));
    let router = Router::new()
        .route("/v1/workers/ready", post(on_ready))
        .route("/v1/worker-heartbeat", post(on_heartbeat))
        .with_state(hive.clone());
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(async move { axum::serve(listener, router).await });
    (url, hive)
}

/// A diffusers image tensor `[1, 3, H, W]` in 0..1 as 8-bit RGB, rounded as
/// `numpy_to_pil` does.
pub fn tensor_rgb8(image: &candle_core::Tensor) -> Vec<u8> {
    let hwc = image.squeeze(0).unwrap().permute((1, 2, 0)).unwrap();
    let values: Vec<f32> = hwc.flatten_all().unwrap().to_vec1().unwrap();
    values
        .iter()
        .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect()
}

/// A base64 RGB PNG's width, height and pixels.
pub fn decode_png(b64: &str) -> (u32, u32, Vec<u8>) {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut rgb = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut rgb).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    rgb.truncate(info.buffer_size());
    (info.width, info.height, rgb)
}
