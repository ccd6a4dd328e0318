//! Connection deadlines and caps, over real TCP against a worker on a free
//! port with short timeouts. Margins are wide: the bounds only need to tell
//! "closed by its deadline" from "held open".

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use sd_contract::event::CancelReason;
use sd_contract::JobState;
use sd_worker::WorkerConfig;

const SHORT: Duration = Duration::from_millis(600);
const LONG: Duration = Duration::from_secs(3600);

/// A worker whose connection deadlines are all `SHORT`, then edited.
fn limited(edit: impl FnOnce(&mut WorkerConfig)) -> WorkerConfig {
    let mut config = config();
    config.connections.header_timeout = SHORT;
    config.connections.body_timeout = SHORT;
    config.connections.idle_timeout = SHORT;
    edit(&mut config);
    config
}

fn connect(url: &str) -> TcpStream {
    let addr = url.strip_prefix("http://").unwrap();
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Reads until the server closes the connection (or resets it) and returns
/// what came and how long it took; panics after `limit`.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let start = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading: {e}"),
        }
        assert!(
            start.elapsed() < limit,
            "the connection was still open after {limit:?}"
        );
    }
    (
        String::from_utf8_lossy(&received).into_owned(),
        start.elapsed(),
    )
}

/// Sends `bytes` one at a time every `pause` until the server closes the
/// connection; returns the response it sent and how long that took.
fn trickle(stream: &mut TcpStream, bytes: &[u8], pause: Duration) -> (String, Duration) {
    let start = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    for byte in bytes {
        if stream.write_all(std::slice::from_ref(byte)).is_err() {
            break;
        }
        std::thread::sleep(pause);
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the connection outlived its trickle"
    );
    let (rest, _) = read_until_closed(stream, Duration::from_secs(5));
    (
        String::from_utf8_lossy(&received).into_owned() + &rest,
        start.elapsed(),
    )
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

#[test]
fn a_request_head_sent_slowly_is_closed_after_the_header_timeout() {
    let server = TestServer::ready(limited(|c| c.connections.idle_timeout = LONG));
    let mut stream = connect(&server.url);
    let head = format!(
        "GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: {}",
        "a".repeat(200)
    );
    let (response, took) = trickle(&mut stream, head.as_bytes(), Duration::from_millis(100));
    assert_eq!(response, "", "no answer to a head that never ended");
    assert!(
        took >= SHORT - Duration::from_millis(100),
        "closed after {took:?}"
    );
    assert!(took < Duration::from_secs(8), "closed after {took:?}");
}

#[test]
fn a_body_sent_slowly_gets_408_and_no_job() {
    let server = TestServer::ready(limited(|c| c.connections.idle_timeout = LONG));
    let mut stream = connect(&server.url);
    let body = generation("");
    let head = format!(
        "POST /v1/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let (response, took) = trickle(&mut stream, body.as_bytes(), Duration::from_millis(200));
    assert_eq!(status_line(&response), "HTTP/1.1 408 Request Timeout");
    assert!(
        response.contains(r#""code":"request_timeout""#),
        "{response}"
    );
    assert!(took < Duration::from_secs(8), "closed after {took:?}");
    assert_eq!(server.state.jobs().len(), 0);
}

#[test]
fn a_declared_body_over_the_limit_is_refused_without_waiting_for_it() {
    let server = TestServer::ready(limited(|c| c.connections.body_timeout = LONG));
    let mut stream = connect(&server.url);
    stream
        .write_all(
            b"POST /v1/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
              Content-Length: 20000000\r\n\r\n{",
        )
        .unwrap();
    let (response, took) = read_until_closed(&mut stream, Duration::from_secs(5));
    assert_eq!(status_line(&response), "HTTP/1.1 413 Payload Too Large");
    assert!(
        response.contains(r#""code":"payload_too_large""#),
        "{response}"
    );
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let server = TestServer::ready(limited(|c| c.connections.header_timeout = LONG));
    let mut silent = connect(&server.url);
    let mut kept_alive = connect(&server.url);
    kept_alive
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let (response, took) = read_until_closed(&mut kept_alive, Duration::from_secs(8));
    assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
    assert!(
        took >= SHORT - Duration::from_millis(100),
        "closed after {took:?}"
    );
    let (nothing, _) = read_until_closed(&mut silent, Duration::from_secs(8));
    assert_eq!(nothing, "");
}

#[test]
fn a_stream_slower_than_every_timeout_receives_every_event() {
    let server = TestServer::start(
        limited(|c| c.connections.idle_timeout = Duration::from_millis(300)),
        fake("step_ms=1000"),
    );
    server.wait_ready();
    let created = submit(
        &server.url,
        &generation(r#","width":64,"height":64,"steps":3"#),
    );
    let transcript = stream(&server.url, &created.sse_url, &[]);
    assert_eq!(
        transcript.types(),
        ["queued", "started", "progress", "progress", "progress", "complete"]
    );
    assert_eq!(transcript.marker(), "[DONE]");
    assert_eq!(
        transcript.comments, 0,
        "kept open without keep-alive comments"
    );
}

#[test]
fn connections_past_the_cap_wait_until_one_closes() {
    let server = TestServer::ready(limited(|c| {
        c.connections.idle_timeout = Duration::from_secs(60);
        c.connections.max_connections = 2;
    }));
    let held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut stream = connect(&server.url);
            stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .unwrap();
            let mut buf = [0u8; 1024];
            let n = stream.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            stream
        })
        .collect();
    let mut third = connect(&server.url);
    third
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut buf = [0u8; 1024];
    let waited = third.read(&mut buf).unwrap_err();
    assert!(
        matches!(waited.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{waited}"
    );
    drop(held);
    let (response, _) = read_until_closed(&mut third, Duration::from_secs(5));
    assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
}

#[test]
fn streams_past_the_cap_get_503_until_one_ends() {
    let server = TestServer::start(
        limited(|c| c.connections.max_streams = 1),
        fake("step_ms=100"),
    );
    server.wait_ready();
    let created = submit(
        &server.url,
        &generation(r#","width":64,"height":64,"steps":100"#),
    );
    let mut first = connect(&server.url);
    write!(
        first,
        "GET {} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        created.sse_url
    )
    .unwrap();
    let mut buf = [0u8; 1024];
    let n = first.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    let refused = get(&server.url, &created.sse_url);
    assert_eq!(refused.status, 503);
    assert_eq!(refused.error().0, "too_many_streams");
    assert!(refused.header("retry-after").is_some());

    delete(&server.url, &format!("/v1/jobs/{}", created.job_id));
    let (rest, _) = read_until_closed(&mut first, Duration::from_secs(10));
    assert!(rest.contains("[CANCELLED]"), "{rest}");
    wait_until(Duration::from_secs(5), || {
        get(&server.url, &created.sse_url).status == 200
    });
}

#[test]
fn past_the_shutdown_timeout_a_job_stuck_in_a_step_is_cancelled() {
    let mut server = TestServer::start(
        limited(|c| {
            c.drain_on_shutdown = true;
            c.shutdown_timeout = Duration::from_millis(500);
        }),
        fake("step_ms=60000"),
    );
    server.wait_ready();
    let created = submit(
        &server.url,
        &generation(r#","width":64,"height":64,"steps":2"#),
    );
    let follower = {
        let (url, path) = (server.url.clone(), created.sse_url.clone());
        std::thread::spawn(move || stream(&url, &path, &[]))
    };
    wait_until(Duration::from_secs(5), || {
        server.state.job(&created.job_id).unwrap().state() == JobState::Running
    });
    let start = Instant::now();
    server.shutdown();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "stopped after {took:?}");
    let transcript = follower.join().unwrap();
    assert_cancelled(&transcript, CancelReason::Shutdown);
    assert_eq!(transcript.terminal_count(), 1);
}
