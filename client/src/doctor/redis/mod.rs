//! `doctor redis`: what the Redis the services share is doing: `PING`
//! latency, the slow log (`SLOWLOG GET 10`), memory used against
//! `maxmemory` (`INFO memory`), connected clients (`INFO clients`), and
//! memory by key prefix: `SCAN` (`COUNT 500`, at most [`MAX_KEYS`] keys)
//! with `MEMORY USAGE` for each key, pipelined in batches, summed as the
//! worker registry ([`REGISTRY_PREFIX`]), the phrase cache
//! ([`CACHE_PREFIX`]) and everything else. Every call gives up after
//! [`CALL_TIMEOUT`].
//!
//! Fetching and judging are apart: [`run`] fetches a [`Snapshot`];
//! [`report`] and the parsers take values already fetched.

mod keys;
mod report;
mod slowlog;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use super::Findings;
use keys::memory_by_prefix;

pub use keys::{KeyKind, KeyMemory, Usage, kind_of};
pub use report::{info_field, report, unreachable};
pub use slowlog::{SlowEntry, parse_slowlog};

/// Where Redis is when neither `--redis` nor `TTS_REDIS_URL` says.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// How long any one call (connecting included) may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// A slow-log entry longer than this (µs) is worth a warning.
pub const SLOW_US: u64 = 10_000;
/// Used memory above this fraction of `maxmemory` is worth a warning.
pub const FULL_FRACTION: f64 = 0.9;
/// Keys measured at most (the sums are partial beyond it).
pub const MAX_KEYS: usize = 100_000;
/// The worker registry's keys.
pub const REGISTRY_PREFIX: &str = tts_redis::keys::WORKER_PREFIX;
/// The phrase cache's keys: entries `tts:phrase:<sha256>`, the index
/// `tts:phrase-index` and the sizes `tts:phrase-sizes`.
pub const CACHE_PREFIX: &str = tts_redis::keys::PHRASE_FAMILY;
/// Keys asked for per `SCAN`, and `MEMORY USAGE` calls per pipeline.
const BATCH: usize = 500;
/// Slow-log entries asked for.
const SLOWLOG_ENTRIES: usize = 10;
/// A slow-log command is cut to this many characters.
const COMMAND_CHARS: usize = 60;

/// A call that did not come back.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer within [`CALL_TIMEOUT`].
    #[error("{what}: no answer within {CALL_TIMEOUT:?}")]
    Timeout {
        /// The call.
        what: &'static str,
    },
    /// Redis (or the connection) answered with an error.
    #[error("{what}: {source}")]
    Redis {
        /// The call.
        what: &'static str,
        /// What went wrong.
        source: redis::RedisError,
    },
}

/// Everything fetched from one Redis; a part that failed holds its error.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The URL, credentials hidden.
    pub url: String,
    /// `PING` round trip, ms.
    pub ping_ms: f64,
    /// `SLOWLOG GET 10`.
    pub slowlog: Result<Vec<SlowEntry>, String>,
    /// `INFO memory`, as sent.
    pub memory_info: Result<String, String>,
    /// `INFO clients`, as sent.
    pub clients_info: Result<String, String>,
    /// Memory by key prefix.
    pub keys: Result<KeyMemory, String>,
}

/// Connects to `url` and reports on it; `Fail` when it cannot be reached.
pub async fn run(url: &str) -> Findings {
    let shown = redacted(url);
    let mut conn = match connect(url).await {
        Ok(conn) => conn,
        Err(e) => return unreachable(&shown, &e),
    };
    let started = Instant::now();
    if let Err(e) = call("PING", redis::cmd("PING").query_async::<String>(&mut conn)).await {
        return unreachable(&shown, &e);
    }
    let ping_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut slowlog = redis::cmd("SLOWLOG");
    slowlog.arg("GET").arg(SLOWLOG_ENTRIES);
    let slowlog = call(
        "SLOWLOG GET",
        slowlog.query_async::<redis::Value>(&mut conn),
    )
    .await;
    let memory_info = info(&mut conn, "memory").await;
    let clients_info = info(&mut conn, "clients").await;
    let keys = memory_by_prefix(&mut conn).await;
    let text = |e: CallError| e.to_string();
    report(&Snapshot {
        url: shown,
        ping_ms,
        slowlog: slowlog.map(|v| parse_slowlog(&v)).map_err(text),
        memory_info: memory_info.map_err(text),
        clients_info: clients_info.map_err(text),
        keys: keys.map_err(text),
    })
}

async fn connect(url: &str) -> Result<MultiplexedConnection, CallError> {
    let client = redis::Client::open(url).map_err(|source| CallError::Redis {
        what: "opening the URL",
        source,
    })?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CALL_TIMEOUT))
        .set_response_timeout(Some(CALL_TIMEOUT));
    call(
        "connecting",
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
}

/// `fut`, given up after [`CALL_TIMEOUT`].
async fn call<T>(
    what: &'static str,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(CallError::Redis { what, source }),
        Err(_) => Err(CallError::Timeout { what }),
    }
}

async fn info(conn: &mut MultiplexedConnection, section: &str) -> Result<String, CallError> {
    let what = if section == "memory" {
        "INFO memory"
    } else {
        "INFO clients"
    };
    call(what, redis::cmd("INFO").arg(section).query_async(conn)).await
}

/// `url` with any password replaced by `***`.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}
