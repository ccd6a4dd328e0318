//! The Lua scripts that change a job in Redis. Each runs atomically, so a
//! job's state, its event counter and its event stream always agree, and a
//! job ends exactly once whichever worker (or client) tries to end it.
//!
//! A job's events are numbered from 0 (the SSE `id`); event `n` is the stream
//! entry `0-(n+1)` and the hash field `events` counts them. The scripts touch
//! keys named in the job's hash (its queue), so they need one Redis, not a
//! cluster.

use std::sync::LazyLock;

use redis::Script;

/// Queues a job unless the queue holds `max_queue`; logs its `queued` event.
///
/// KEYS: queue stream, queued counter, job hash, job events.
/// ARGV: max_queue, job id, request JSON, params JSON, submitted (ms since
/// the epoch), stream bound. Returns the position (1 = next), or -1 when full.
pub static SUBMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local queued = tonumber(redis.call('GET', KEYS[2]) or '0')
if queued >= tonumber(ARGV[1]) then return -1 end
queued = redis.call('INCR', KEYS[2])
local entry = redis.call('XADD', KEYS[1], '*', 'job', ARGV[2])
redis.call('HSET', KEYS[3], 'state', 'queued', 'request', ARGV[3], 'params', ARGV[4],
  'submitted_ms', ARGV[5], 'entry', entry, 'queue', KEYS[1], 'counter', KEYS[2],
  'events', 1, 'attempts', 0)
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '0-1', 'event',
  '{"type":"queued","position":' .. queued .. '}')
return queued
"#,
    )
});

/// A worker takes a job it read from the queue (or claimed from a dead
/// worker): counts the attempt and names the worker.
///
/// KEYS: job hash, queued counter. ARGV: worker id.
/// Returns `{previous state, attempt, cancel reason or '', events logged}`;
/// the state is `gone` for a job that expired and `ended` for one that ended.
pub static START: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'gone', 0, '', 0} end
if state ~= 'queued' and state ~= 'running' then return {'ended', 0, '', 0} end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if state == 'queued' then redis.call('DECR', KEYS[2]) end
redis.call('HSET', KEYS[1], 'state', 'running', 'worker_id', ARGV[1])
redis.call('HDEL', KEYS[1], 'step', 'total')
return {state, attempt, redis.call('HGET', KEYS[1], 'cancel') or '',
  tonumber(redis.call('HGET', KEYS[1], 'events'))}
"#,
    )
});

/// Logs the next event of a running job, by the worker of its current
/// attempt only, and ends the job when the event is terminal.
///
/// KEYS: job hash, job events. ARGV: attempt, the event's index, event JSON,
/// terminal state or '', TTL in seconds, stream bound, step or '', total or ''.
/// Returns the index; -1 when the job has already ended, -2 when it is gone,
/// -3 when another attempt owns it now, -4 when the index is not the next.
/// An event already logged at that index (a retry whose answer was lost)
/// returns its index again.
pub static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -2 end
local count = tonumber(redis.call('HGET', KEYS[1], 'events'))
local index = tonumber(ARGV[2])
if redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[1] then return -3 end
if count == index + 1 and redis.call('HGET', KEYS[1], 'last_write') == ARGV[1] .. ':' .. ARGV[2] then
  return index
end
if state ~= 'queued' and state ~= 'running' then return -1 end
if count ~= index then return -4 end
redis.call('HSET', KEYS[1], 'events', count + 1, 'last_write', ARGV[1] .. ':' .. ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '0-' .. (count + 1), 'event', ARGV[3])
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'step', ARGV[7]) end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'total', ARGV[8]) end
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'state', ARGV[4], 'end', ARGV[3])
  redis.call('HDEL', KEYS[1], 'request')
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
return index
"#,
    )
});

/// A client cancels a job: a queued one ends at once (taken off the queue),
/// a running one is flagged for its worker, which stops within a step.
///
/// KEYS: job hash, job events. ARGV: TTL in seconds, stream bound, the
/// `cancelled` event's JSON. Returns `gone`, `cancelled` (ended now),
/// `running` (flagged), or the terminal state the job had already reached.
pub static CANCEL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'gone' end
if state ~= 'queued' and state ~= 'running' then return state end
redis.call('HSET', KEYS[1], 'cancel', 'client')
if state == 'running' then return 'running' end
redis.call('XDEL', redis.call('HGET', KEYS[1], 'queue'), redis.call('HGET', KEYS[1], 'entry'))
redis.call('DECR', redis.call('HGET', KEYS[1], 'counter'))
local count = tonumber(redis.call('HGET', KEYS[1], 'events'))
redis.call('HSET', KEYS[1], 'events', count + 1, 'state', 'cancelled', 'end', ARGV[3])
redis.call('HDEL', KEYS[1], 'request')
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '0-' .. (count + 1), 'event', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 'cancelled'
"#,
    )
});

/// Renews a running job's claim on its queue entry (resetting its idle
/// time, so no other worker takes it over), if the job is still this
/// attempt's.
///
/// KEYS: queue stream, job hash. ARGV: group, consumer, entry, attempt.
/// Returns 1, or 0 when another attempt owns the job now.
pub static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[2], 'attempts') ~= ARGV[4] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"#,
    )
});
