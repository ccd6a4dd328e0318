//! The flags of the shared queue (`--redis-url` and the bounds that go with it).

use std::time::Duration;

use clap::Args;

/// Default of `--result-ttl`: as long as `--job-retention` keeps a job in memory.
pub const DEFAULT_RESULT_TTL: Duration = Duration::from_secs(10 * 60);
/// Default of `--claim-after`.
pub const DEFAULT_CLAIM_AFTER: Duration = Duration::from_secs(30);
/// Default of `--max-attempts`.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// The shared-queue flags of the serve command.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Share one job queue with every worker serving the same model through
    /// this Redis (`redis://[:PASSWORD@]HOST:PORT/DB`, `rediss://` for TLS).
    /// Without it the queue is this process's own.
    #[arg(long, env = "SD_WORKER_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// With `--redis-url`: how long a finished job's status, events and
    /// images stay in Redis.
    #[arg(long, env = "SD_WORKER_RESULT_TTL", default_value_t = DEFAULT_RESULT_TTL.into())]
    pub result_ttl: humantime::Duration,
    /// With `--redis-url`: how long a running job's worker may go silent
    /// (it renews its claim every quarter of this) before another worker
    /// takes the job over and runs it again from the start.
    #[arg(long, env = "SD_WORKER_CLAIM_AFTER", default_value_t = DEFAULT_CLAIM_AFTER.into())]
    pub claim_after: humantime::Duration,
    /// With `--redis-url`: how many times a job may be started (the first
    /// run and the restarts after workers died running it); a job that needs
    /// more fails, so a job that kills workers cannot take down the fleet.
    #[arg(long, env = "SD_WORKER_MAX_ATTEMPTS", default_value_t = DEFAULT_MAX_ATTEMPTS, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
}

/// The shared queue's configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// The server's URL; may hold a password.
    pub url: String,
    /// How long finished jobs stay.
    pub result_ttl: Duration,
    /// How long a running job's worker may go silent before it is taken over.
    pub claim_after: Duration,
    /// How many runs a job may take.
    pub max_attempts: u32,
}

impl RedisConfig {
    /// The configuration the flags give, if they name a server.
    pub fn from_args(args: &RedisArgs) -> Option<Self> {
        let url = args.redis_url.as_ref().filter(|u| !u.trim().is_empty())?;
        Some(Self {
            url: url.trim().to_string(),
            result_ttl: Duration::from(args.result_ttl).max(Duration::from_secs(1)),
            claim_after: Duration::from(args.claim_after).max(Duration::from_millis(200)),
            max_attempts: args.max_attempts.max(1),
        })
    }

    /// A configuration with the default bounds.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            result_ttl: DEFAULT_RESULT_TTL,
            claim_after: DEFAULT_CLAIM_AFTER,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// The URL without its password, for logs.
    pub fn redacted_url(&self) -> String {
        redact_password(&self.url)
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("result_ttl", &self.result_ttl)
            .field("claim_after", &self.claim_after)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

/// `url` with the password of its user info replaced by `***`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info
                .split_once(':')
                .map_or(user_info, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_logs() {
        let config = RedisConfig::new("rediss://app:s3cret@cache.example:6380/2");
        assert_eq!(
            config.redacted_url(),
            "rediss://app:***@cache.example:6380/2"
        );
        assert!(!format!("{config:?}").contains("s3cret"));
        assert_eq!(
            redact_password("redis://:pw@127.0.0.1:6379"),
            "redis://:***@127.0.0.1:6379"
        );
        assert_eq!(
            redact_password("redis://127.0.0.1/0"),
            "redis://127.0.0.1/0"
        );
    }
}
