//! [`Jobs`], every job the worker knows by id, which forgets finished ones
//! once their retention period is over, too many have piled up or they hold
//! too many bytes together, and [`new_job_id`], which names new ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::job::Job;

/// How long finished jobs are kept, and how many and how much of them at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// How long a finished job is kept.
    pub period: Duration,
    /// Most finished jobs kept at once.
    pub max_finished: usize,
    /// Most bytes finished jobs may hold together ([`Job::retained_bytes`]).
    pub max_bytes: u64,
}

/// Every job the worker knows, by id.
#[derive(Debug)]
pub struct Jobs {
    retention: Retention,
    map: Mutex<HashMap<String, Arc<Job>>>,
}

impl Jobs {
    /// An empty registry that keeps finished jobs under `retention`.
    pub fn new(retention: Retention) -> Self {
        Self {
            retention,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Job>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a job, and forgets the finished jobs beyond the caps.
    pub fn insert(&self, job: Arc<Job>) {
        let mut map = self.lock();
        map.insert(job.id().to_string(), job);
        self.trim(&mut map, Instant::now());
    }

    /// Forgets a job.
    pub fn remove(&self, id: &str) -> Option<Arc<Job>> {
        self.lock().remove(id)
    }

    /// The job with this id, if it is known.
    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.lock().get(id).cloned()
    }

    /// The jobs that have not ended yet.
    pub fn unfinished(&self) -> Vec<Arc<Job>> {
        self.lock()
            .values()
            .filter(|job| !job.state().is_terminal())
            .cloned()
            .collect()
    }

    /// Every job held, the oldest submitted first.
    pub fn all(&self) -> Vec<Arc<Job>> {
        let mut jobs: Vec<Arc<Job>> = self.lock().values().cloned().collect();
        jobs.sort_by_key(|job| job.submitted_at());
        jobs
    }

    /// How many jobs are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no job is held.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Forgets the jobs that ended more than the retention period before
    /// `now`, then the oldest finished ones while more than `max_finished`
    /// are left or they hold more than `max_bytes` together (but never the
    /// newest, so the last result can always be fetched once); returns how
    /// many were dropped.
    pub fn expire(&self, now: Instant) -> usize {
        let mut map = self.lock();
        self.trim(&mut map, now)
    }

    fn trim(&self, map: &mut HashMap<String, Arc<Job>>, now: Instant) -> usize {
        let Retention {
            period,
            max_finished,
            max_bytes,
        } = self.retention;
        let before = map.len();
        map.retain(|_, job| {
            job.finished_at()
                .is_none_or(|t| now.saturating_duration_since(t) < period)
        });
        let mut finished: Vec<(Instant, u64, String)> = map
            .iter()
            .filter_map(|(id, job)| {
                let bytes = u64::try_from(job.retained_bytes()).unwrap_or(u64::MAX);
                job.finished_at().map(|t| (t, bytes, id.clone()))
            })
            .collect();
        finished.sort();
        let mut count = finished.len();
        let mut bytes = finished
            .iter()
            .fold(0u64, |sum, (_, b, _)| sum.saturating_add(*b));
        for (_, size, id) in &finished {
            if count <= max_finished && (bytes <= max_bytes || count == 1) {
                break;
            }
            map.remove(id);
            count -= 1;
            bytes -= size;
        }
        before - map.len()
    }
}

/// A fresh job id: `job-` and 32 random hex digits.
pub fn new_job_id() -> String {
    format!("job-{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use sd_contract::event::CancelReason;

    use super::super::testing::job;
    use super::*;

    fn jobs(max_finished: usize, max_bytes: u64) -> Jobs {
        Jobs::new(Retention {
            period: Duration::from_secs(600),
            max_finished,
            max_bytes,
        })
    }

    /// A finished job whose result image is `image_bytes` long in base64.
    fn done(image_bytes: usize) -> Arc<Job> {
        let job = job();
        assert!(job.start().is_some());
        job.image_done(&vec![0; image_bytes / 4 * 3], 64, 64, 1);
        assert!(job.finish_complete());
        std::thread::sleep(Duration::from_millis(2));
        job
    }

    #[test]
    fn finished_jobs_expire() {
        let jobs = Jobs::new(Retention {
            period: Duration::from_secs(10),
            max_finished: 10,
            max_bytes: u64::MAX,
        });
        let done = job();
        done.finish_cancelled(CancelReason::Client);
        jobs.insert(done);
        jobs.insert(job());
        let later = Instant::now() + Duration::from_secs(60);
        assert_eq!(jobs.expire(Instant::now()), 0);
        assert_eq!(jobs.expire(later), 1);
        assert_eq!(jobs.len(), 1);
    }

    #[test]
    fn the_oldest_finished_jobs_go_beyond_the_cap() {
        let jobs = jobs(2, u64::MAX);
        let mut ids = Vec::new();
        for _ in 0..4 {
            let done = job();
            done.finish_cancelled(CancelReason::Client);
            ids.push(done.id().to_string());
            jobs.insert(done);
            std::thread::sleep(Duration::from_millis(2));
        }
        jobs.insert(job());
        assert!(jobs.get(&ids[0]).is_none() && jobs.get(&ids[1]).is_none());
        assert!(jobs.get(&ids[2]).is_some() && jobs.get(&ids[3]).is_some());
        assert_eq!(jobs.len(), 3);
    }

    #[test]
    fn every_insert_enforces_the_cap() {
        let jobs = jobs(3, u64::MAX);
        for _ in 0..50 {
            let done = job();
            done.finish_cancelled(CancelReason::Client);
            jobs.insert(done);
            assert!(jobs.len() <= 3);
        }
        let queued: Vec<_> = (0..5).map(|_| job()).collect();
        for job in &queued {
            jobs.insert(Arc::clone(job));
        }
        assert_eq!(jobs.len(), 8, "unfinished jobs are never dropped");
        for job in &queued {
            job.finish_cancelled(CancelReason::Client);
        }
        assert_eq!(jobs.expire(Instant::now()), 5);
        assert_eq!(jobs.len(), 3);
    }

    #[test]
    fn the_oldest_finished_jobs_go_beyond_the_byte_bound() {
        let jobs = jobs(100, 250_000);
        let olds: Vec<_> = (0..3).map(|_| done(100_000)).collect();
        for job in &olds {
            jobs.insert(Arc::clone(job));
        }
        assert!(jobs.get(olds[0].id()).is_none(), "300 KB > 250 KB");
        assert!(jobs.get(olds[1].id()).is_some() && jobs.get(olds[2].id()).is_some());
        let running = job();
        jobs.insert(Arc::clone(&running));
        assert_eq!(jobs.len(), 3);

        let big = done(1_000_000);
        jobs.insert(Arc::clone(&big));
        assert_eq!(
            jobs.len(),
            2,
            "only the running job and the newest result are left"
        );
        assert!(jobs.get(big.id()).is_some() && jobs.get(running.id()).is_some());
    }
}
