//! Replaying and following a job's events from Redis, for an SSE subscriber
//! on any worker.
//!
//! Each subscriber reads the job's event stream on a connection of its own
//! (`XREAD BLOCK` would hold up every other command of a shared one), from
//! the entry after the last it has seen; event `n` is entry `0-(n+1)`, so
//! `Last-Event-ID: n` resumes at entry `0-(n+1)`, exclusive. A lost
//! connection is opened again and the read resumes where it stopped, so a
//! Redis restart costs the subscriber a pause, not events. The stream ends
//! after the terminal event, or when the job has expired.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;
use redis::RedisError;
use sd_contract::JobEvent;

use super::{events_key, job_key, RedisQueue};
use crate::jobs::LoggedEvent;

/// How long one read waits for new events.
const BLOCK: Duration = Duration::from_secs(2);
/// Most events one read returns.
const BATCH: usize = 64;

struct Follower {
    queue: Arc<RedisQueue>,
    id: String,
    events: String,
    /// The last stream entry read.
    last: String,
    conn: Option<MultiplexedConnection>,
    buffer: VecDeque<LoggedEvent>,
    done: bool,
}

impl RedisQueue {
    /// Every event of job `id` from index `from` on: those already logged,
    /// then each new one as it comes, up to the terminal event.
    pub fn follow(self: &Arc<Self>, id: &str, from: usize) -> BoxStream<'static, LoggedEvent> {
        let follower = Follower {
            queue: Arc::clone(self),
            id: id.to_string(),
            events: events_key(id),
            last: format!("0-{from}"),
            conn: None,
            buffer: VecDeque::new(),
            done: false,
        };
        futures_util::stream::unfold(follower, |mut f| async move {
            loop {
                if let Some(event) = f.buffer.pop_front() {
                    if event.1.is_terminal() {
                        f.done = true;
                        f.buffer.clear();
                    }
                    return Some((event, f));
                }
                if f.done {
                    return None;
                }
                match f.read().await {
                    Ok(true) => {}
                    Ok(false) => return None,
                    Err(error) => {
                        f.queue.record(&error);
                        f.conn = None;
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            }
        })
        .boxed()
    }
}

impl Follower {
    /// Reads the next events into the buffer; false once the job is gone.
    async fn read(&mut self) -> Result<bool, RedisError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert(self.queue.dedicated(BLOCK).await?),
        };
        let reply: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.events)
            .arg(&self.last)
            .query_async(conn)
            .await?;
        let entries: Vec<_> = reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .collect();
        if entries.is_empty() {
            let exists: bool = redis::cmd("EXISTS")
                .arg(job_key(&self.id))
                .query_async(conn)
                .await?;
            return Ok(exists);
        }
        for entry in entries {
            self.last.clone_from(&entry.id);
            let index = entry
                .id
                .strip_prefix("0-")
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| n.checked_sub(1));
            let event = entry
                .get::<String>("event")
                .and_then(|json| serde_json::from_str::<JobEvent>(&json).ok());
            match (index, event) {
                (Some(index), Some(event)) => self.buffer.push_back((index, Arc::new(event))),
                _ => tracing::warn!(job = %self.id, entry = %entry.id, "unreadable event skipped"),
            }
        }
        Ok(true)
    }
}
