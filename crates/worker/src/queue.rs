//! The bounded FIFO between the HTTP handlers and the engine thread.
//!
//! Handlers push without blocking (a full queue is an immediate error, which
//! becomes a 503); the engine thread blocks on [`JobQueue::pop`]. A queued job
//! can be taken out again at once when it is cancelled, which frees its slot
//! straight away rather than when the engine would have reached it.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::jobs::Job;

/// Why a job could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue holds its capacity.
    Full,
    /// The queue was closed for shutdown.
    Closed,
}

/// A bounded FIFO of jobs.
#[derive(Debug)]
pub struct JobQueue {
    inner: Mutex<Inner>,
    available: Condvar,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    jobs: VecDeque<Arc<Job>>,
    closed: bool,
}

impl JobQueue {
    /// An empty queue holding at most `capacity` jobs.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            available: Condvar::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many jobs may wait.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Appends a job and logs its `queued` event with its position (1 = next).
    pub fn push(&self, job: Arc<Job>) -> Result<usize, PushError> {
        let mut inner = self.lock();
        if inner.closed {
            return Err(PushError::Closed);
        }
        if inner.jobs.len() >= self.capacity {
            return Err(PushError::Full);
        }
        let position = inner.jobs.len() + 1;
        job.queued(position);
        inner.jobs.push_back(job);
        drop(inner);
        self.available.notify_one();
        Ok(position)
    }

    /// Takes the next job, waiting for one; `None` once the queue is closed.
    pub fn pop(&self) -> Option<Arc<Job>> {
        let mut inner = self.lock();
        loop {
            if inner.closed {
                return None;
            }
            if let Some(job) = inner.jobs.pop_front() {
                return Some(job);
            }
            inner = self
                .available
                .wait(inner)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Takes a waiting job out of the queue; `None` if it is not waiting.
    pub fn remove(&self, id: &str) -> Option<Arc<Job>> {
        let mut inner = self.lock();
        let index = inner.jobs.iter().position(|j| j.id() == id)?;
        inner.jobs.remove(index)
    }

    /// A waiting job's position (1 = next).
    pub fn position(&self, id: &str) -> Option<usize> {
        self.lock()
            .jobs
            .iter()
            .position(|j| j.id() == id)
            .map(|i| i + 1)
    }

    /// How many jobs wait.
    pub fn len(&self) -> usize {
        self.lock().jobs.len()
    }

    /// Whether no job waits.
    pub fn is_empty(&self) -> bool {
        self.lock().jobs.is_empty()
    }

    /// Closes the queue: later pushes fail and [`JobQueue::pop`] returns
    /// `None`. Returns the jobs that were waiting.
    pub fn close(&self) -> Vec<Arc<Job>> {
        let mut inner = self.lock();
        inner.closed = true;
        let waiting = inner.jobs.drain(..).collect();
        drop(inner);
        self.available.notify_all();
        waiting
    }
}
