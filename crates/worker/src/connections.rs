//! The accept loop: the deadlines and caps on connections that axum's
//! `serve` has no settings for.
//!
//! hyper serves each connection (HTTP/1.1); a watchdog beside it knows what
//! the connection is doing and closes it when it takes too long:
//!
//! - waiting for a request, no byte of it read yet: closed `--idle-timeout`
//!   after the accept or the end of the previous response;
//! - reading a request head: closed `--header-timeout` after its first byte;
//! - serving a request, from its head until its response is sent: no deadline,
//!   so an event stream that follows a ten-minute job is never cut (the body
//!   has its own, see [`crate::body`]).
//!
//! hyper's own header timeout stays off: it starts as soon as a connection
//! waits for a request, so it would also close idle keep-alive connections
//! after the header timeout, and the two could not differ.
//!
//! At most `--max-connections` are served at once: past that the loop accepts
//! nothing until one closes, and new ones wait in the kernel's listen backlog.
//! On shutdown the loop stops accepting, asks each connection to close after
//! the response it is sending, and closes those still open after a grace
//! period.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::config::ConnectionLimits;

/// How long connections may stay open once the server stops accepting.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `stop` resolves, then closes every
/// connection: gracefully, or by force after [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()>,
) {
    let capacity = limits.max_connections.clamp(1, u32::MAX as usize);
    let slots = Arc::new(Semaphore::new(capacity));
    let (closing, closing_rx) = watch::channel(Closing::No);
    let mut stop = pin!(stop);
    let mut at_capacity = false;
    loop {
        let slot = tokio::select! {
            () = &mut stop => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        if slots.available_permits() == 0 && !at_capacity {
            tracing::warn!(
                max_connections = capacity,
                "serving the most connections allowed; new ones wait until one closes"
            );
        }
        at_capacity = slots.available_permits() == 0;
        let stream = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of descriptors or a connection reset before its accept:
                    // wait a little rather than spin.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(
            stream,
            router.clone(),
            limits,
            closing_rx.clone(),
            slot,
        ));
    }
    drop(listener);
    closing.send_replace(Closing::Gracefully);
    let all = u32::try_from(capacity).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("closing connections still open {SHUTDOWN_GRACE:?} after shutdown");
        closing.send_replace(Closing::Now);
    }
}

/// What the server asks of its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// Nothing: serve.
    No,
    /// Close after the response in flight.
    Gracefully,
    /// Close at once.
    Now,
}

/// What a connection is doing, for its watchdog.
#[derive(Debug, Clone, Copy)]
enum Activity {
    /// Waiting for a request, no byte of it read, since then.
    Idle(Instant),
    /// Reading a request head whose first byte came then.
    Head(Instant),
    /// Serving this many requests whose responses are not yet sent.
    Serving(usize),
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy)]
enum Expired {
    Idle,
    Head,
}

impl Expired {
    fn as_str(self) -> &'static str {
        match self {
            Expired::Idle => "idle timeout",
            Expired::Head => "request head timeout",
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: ConnectionLimits,
    mut closing: watch::Receiver<Closing>,
    _slot: OwnedSemaphorePermit,
) {
    let (activity, watched) = watch::channel(Activity::Idle(Instant::now()));
    let activity = Arc::new(activity);
    let io = TokioIo::new(WatchedIo {
        stream,
        activity: Arc::clone(&activity),
    });
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let serving = ServingGuard::begin(Arc::clone(&activity));
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await?;
            Ok::<_, Infallible>(response.map(|body| TrackedBody {
                body,
                _serving: serving,
            }))
        }
    });
    let mut connection = pin!(http1::Builder::new()
        .header_read_timeout(None)
        .serve_connection(io, service));
    let mut watchdog = pin!(watchdog(watched, limits));
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                return;
            }
            expired = &mut watchdog => {
                tracing::debug!(reason = expired.as_str(), "closing a connection");
                return;
            }
            changed = closing.changed() => match changed.map(|()| *closing.borrow()) {
                Ok(Closing::No) => {}
                Ok(Closing::Gracefully) => connection.as_mut().graceful_shutdown(),
                Ok(Closing::Now) | Err(_) => return,
            },
        }
    }
}

/// Resolves when the connection has been idle, or reading a request head,
/// for longer than allowed.
async fn watchdog(mut activity: watch::Receiver<Activity>, limits: ConnectionLimits) -> Expired {
    loop {
        let deadline = match *activity.borrow_and_update() {
            Activity::Idle(since) => Some((since.checked_add(limits.idle_timeout), Expired::Idle)),
            Activity::Head(since) => {
                Some((since.checked_add(limits.header_timeout), Expired::Head))
            }
            Activity::Serving(_) => None,
        };
        let expiry = async {
            match deadline {
                Some((Some(at), expired)) => {
                    tokio::time::sleep_until(at).await;
                    expired
                }
                Some((None, _)) | None => std::future::pending().await,
            }
        };
        tokio::select! {
            expired = expiry => return expired,
            changed = activity.changed() => {
                if changed.is_err() {
                    return std::future::pending().await;
                }
            }
        }
    }
}

/// Counts a request as served from its head until its response is sent.
struct ServingGuard(Arc<watch::Sender<Activity>>);

impl ServingGuard {
    fn begin(activity: Arc<watch::Sender<Activity>>) -> Self {
        activity.send_modify(|now| {
            *now = match *now {
                Activity::Serving(n) => Activity::Serving(n + 1),
                Activity::Idle(_) | Activity::Head(_) => Activity::Serving(1),
            }
        });
        Self(activity)
    }
}

impl Drop for ServingGuard {
    fn drop(&mut self) {
        self.0.send_modify(|now| {
            *now = match *now {
                Activity::Serving(n) if n > 1 => Activity::Serving(n - 1),
                _ => Activity::Idle(Instant::now()),
            }
        });
    }
}

/// A response body that keeps its request counted as served until hyper has
/// sent it (or the connection dropped it).
struct TrackedBody {
    body: Body,
    _serving: ServingGuard,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket, noting when the first byte of a request arrives on an idle
/// connection.
struct WatchedIo {
    stream: TcpStream,
    activity: Arc<watch::Sender<Activity>>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.send_if_modified(|now| match now {
                Activity::Idle(_) => {
                    *now = Activity::Head(Instant::now());
                    true
                }
                Activity::Head(_) | Activity::Serving(_) => false,
            });
        }
        polled
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
