//! [`Jobs`], every job the worker knows by id, which forgets finished ones
//! once their retention period is over or too many have piled up, and
//! [`new_job_id`], which names new ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::job::Job;

/// Every job the worker knows, by id.
#[derive(Debug, Default)]
pub struct Jobs {
    map: Mutex<HashMap<String, Arc<Job>>>,
}

impl Jobs {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Job>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a job.
    pub fn insert(&self, job: Arc<Job>) {
        self.lock().insert(job.id().to_string(), job);
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

    /// How many jobs are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no job is held.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Forgets jobs that ended more than `retention` before `now`, then the
    /// oldest finished ones beyond `max_finished`; returns how many were dropped.
    pub fn expire(&self, now: Instant, retention: Duration, max_finished: usize) -> usize {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, job| {
            job.finished_at()
                .is_none_or(|t| now.saturating_duration_since(t) < retention)
        });
        let mut finished: Vec<(Instant, String)> = map
            .iter()
            .filter_map(|(id, job)| job.finished_at().map(|t| (t, id.clone())))
            .collect();
        if finished.len() > max_finished {
            finished.sort();
            for (_, id) in &finished[..finished.len() - max_finished] {
                map.remove(id);
            }
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

    #[test]
    fn finished_jobs_expire() {
        let jobs = Jobs::default();
        let done = job();
        done.finish_cancelled(CancelReason::Client);
        jobs.insert(done);
        jobs.insert(job());
        let later = Instant::now() + Duration::from_secs(60);
        assert_eq!(jobs.expire(Instant::now(), Duration::from_secs(10), 10), 0);
        assert_eq!(jobs.expire(later, Duration::from_secs(10), 10), 1);
        assert_eq!(jobs.len(), 1);
    }

    #[test]
    fn the_oldest_finished_jobs_go_beyond_the_cap() {
        let jobs = Jobs::default();
        let mut ids = Vec::new();
        for _ in 0..4 {
            let done = job();
            done.finish_cancelled(CancelReason::Client);
            ids.push(done.id().to_string());
            jobs.insert(done);
            std::thread::sleep(Duration::from_millis(2));
        }
        jobs.insert(job());
        assert_eq!(jobs.expire(Instant::now(), Duration::from_secs(600), 2), 2);
        assert!(jobs.get(&ids[0]).is_none() && jobs.get(&ids[1]).is_none());
        assert!(jobs.get(&ids[2]).is_some() && jobs.get(&ids[3]).is_some());
        assert_eq!(jobs.len(), 3);
    }
}
