//! Workers found through Redis: every [`REFRESH`] the registry's entries
//! are read (`SCAN` for the worker keys, then `GET` and `PTTL` for each)
//! and each whose URL `--registry-allow` allows is added to the pool or
//! has its expiry renewed; any other is refused (logged once, counted). A
//! worker is dropped when its entry's time to live runs out, or at the
//! first complete read that no longer lists it (its entry was deleted),
//! unless the registry could not be read, or its server restarted (a new
//! `run_id`), within the longest time to live seen: a Redis that restarted
//! empty lists nobody until the workers' next heartbeats, and dropping
//! them all would be an outage.
//! Clients are accepted after the first read (or `FIRST_READ_LIMIT`), so
//! that an orchestrator just started does not answer its first requests
//! with `worker_unavailable` while its workers are in the registry.
//! Redis being away keeps the static workers serving (readiness says
//! `degraded`), and the registry's workers that answer their load polls
//! until a time to live after it is back (their entries could not be
//! renewed; a worker that stops answering keeps its last known expiry);
//! the connection is remade by itself.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tts_redis::registry::{Entry, KEY_PREFIX};

use crate::metrics;
use crate::pool::Pool;

/// How often the registry is read.
pub(crate) const REFRESH: Duration = Duration::from_millis(500);
/// How long start-up waits for the first read before accepting clients.
pub(crate) const FIRST_READ_LIMIT: Duration = Duration::from_secs(5);
/// Most entries read per refresh.
const MAX_WORKERS: usize = 256;
/// How long after a failed read nothing is unlisted, until an entry's
/// time to live says longer (workers renew theirs every third of it).
const MIN_GRACE: Duration = Duration::from_secs(3);
/// The longest that grace lasts, whatever an entry's time to live says (an
/// entry written by hand may live an hour without being a heartbeat).
const MAX_GRACE: Duration = Duration::from_secs(60);

/// The registry as this orchestrator follows it.
pub(crate) struct Registry {
    url: String,
    pool: Arc<Pool>,
    /// The worker URLs it may add (`--registry-allow`).
    allow: Vec<glob::Pattern>,
    /// URLs already refused (logged once each), at most `MAX_WORKERS`.
    refused: HashSet<String>,
    conn: Option<ConnectionManager>,
    /// When a read last failed, or the server was found restarted.
    failed_at: Option<Instant>,
    /// Whether the last read failed (its warning is logged once).
    failing: bool,
    /// The Redis server's `run_id` at the last read (a new one: it
    /// restarted, perhaps between two reads).
    server: Option<String>,
    /// The longest time to live an entry has had, within the grace's
    /// bounds.
    longest_ttl: Duration,
}

impl Registry {
    pub(crate) fn new(url: String, pool: Arc<Pool>, allow: Vec<glob::Pattern>) -> Self {
        if allow.is_empty() {
            warn!(
                "--redis-url without --registry-allow: workers announced in the registry will not be used"
            );
        }
        Self {
            url,
            pool,
            allow,
            refused: HashSet::new(),
            conn: None,
            failed_at: None,
            failing: false,
            server: None,
            longest_ttl: MIN_GRACE,
        }
    }

    /// Reads the registry once, for at most `limit`: the clients accepted
    /// after it find the workers it lists (before it, none).
    pub(crate) async fn first_read(&mut self, limit: Duration) {
        if tokio::time::timeout(limit, self.read()).await.is_err() {
            warn!(
                limit_ms = limit.as_millis() as u64,
                "the worker registry's first read took too long; clients are accepted without it"
            );
        }
        let workers = self.pool.all().len();
        info!(workers, "worker registry read");
    }

    /// Follows the registry until `stop`.
    pub(crate) async fn follow(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.read().await;
        }
    }

    /// One read: the pool follows it, and what expired leaves.
    async fn read(&mut self) {
        match self.refresh().await {
            Ok(()) if self.failing => {
                info!("registry readable again");
                self.failing = false;
            }
            Ok(()) => {}
            Err(e) => {
                self.failed_at = Some(Instant::now());
                if !self.failing {
                    warn!(error = %e, "cannot read the worker registry; static workers serve on");
                }
                self.failing = true;
            }
        }
        // Within the grace, answering workers stay until it ends: long
        // enough for each to renew its entry once the registry is back.
        if let Some(until) = self.grace_until() {
            self.pool.hold(until);
        }
        for gone in self.pool.expire(Instant::now()) {
            info!(worker = %gone, "registry entry expired or deleted: worker dropped");
        }
    }

    async fn refresh(&mut self) -> Result<(), String> {
        if self.conn.is_none() {
            self.conn = Some(tts_redis::connect(&self.url).await?);
        }
        let Some(c) = self.conn.as_mut() else {
            return Ok(());
        };
        // A restart quick enough to fall between two reads fails none of
        // them; the server's run_id tells it.
        let server = run_id(c).await;
        if server.is_some() && self.server.is_some() && server != self.server {
            info!("the registry's Redis restarted: its workers are kept until they renew");
            self.failed_at = Some(Instant::now());
        }
        self.server = server.or(self.server.take());
        let keys = worker_keys(c).await?;
        let complete = keys.len() < MAX_WORKERS;
        let read = if keys.is_empty() {
            Vec::new()
        } else {
            entries(c, &keys).await?
        };
        let mut listed = HashSet::new();
        for (json, ttl_ms) in read {
            let Some(entry) = json.as_deref().and_then(Entry::from_json) else {
                continue;
            };
            // An entry without an expiry would never go: not a heartbeat.
            if ttl_ms <= 0 {
                continue;
            }
            if !self.allows(&entry.url) {
                continue;
            }
            listed.insert(entry.url.clone());
            let ttl = Duration::from_millis(ttl_ms as u64);
            self.longest_ttl = self.longest_ttl.max(ttl.min(MAX_GRACE));
            let expires = Instant::now() + ttl;
            match self.pool.add(&entry.url, Some(expires)) {
                Ok(true) => {
                    metrics::registry_added();
                    info!(worker = %entry.url, voices = entry.voices.len(), threads = entry.threads,
                        version = %entry.version, "worker registered");
                    self.pool.poll_now(&entry.url).await;
                }
                Ok(false) => {}
                Err(e) => warn!(worker = %entry.url, error = %e, "registry entry ignored"),
            }
        }
        // Entries vanish at once only from a registry read without
        // interruption for a whole time to live: one that came back
        // (perhaps empty) keeps its workers until they renew, or expire.
        if complete && self.grace_until().is_none() {
            self.pool.unlist(&listed, Instant::now());
        }
        Ok(())
    }

    /// When the grace after a failed read or a restart ends (the longest
    /// time to live seen after it); `None` outside it.
    fn grace_until(&self) -> Option<Instant> {
        let until = self.failed_at? + self.longest_ttl;
        (Instant::now() < until).then_some(until)
    }

    /// Whether `--registry-allow` allows `url`; a refusal is logged and
    /// counted the first time a URL is seen.
    fn allows(&mut self, url: &str) -> bool {
        if allowed(&self.allow, url) {
            return true;
        }
        if self.refused.len() >= MAX_WORKERS {
            self.refused.clear();
        }
        if self.refused.insert(url.to_owned()) {
            metrics::registry_refused();
            warn!(worker = %url,
                "registry entry refused: its URL matches no --registry-allow pattern; it gets no requests and no worker token");
        }
        false
    }
}

/// Whether any of `patterns` matches the whole of `url`.
fn allowed(patterns: &[glob::Pattern], url: &str) -> bool {
    patterns.iter().any(|p| p.matches(url))
}

/// The registry's worker keys (`SCAN`), at most [`MAX_WORKERS`].
/// The server's `run_id` (new at every start), if it tells it: a Redis
/// that forbids `INFO` is still a registry, without restart detection.
async fn run_id(c: &mut ConnectionManager) -> Option<String> {
    let info: String = redis::cmd("INFO").arg("server").query_async(c).await.ok()?;
    parse_run_id(&info)
}

/// The `run_id` field of `INFO server`'s text.
fn parse_run_id(info: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
}

async fn worker_keys(c: &mut ConnectionManager) -> Result<Vec<String>, String> {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{KEY_PREFIX}*"))
            .arg("COUNT")
            .arg(100)
            .query_async(c)
            .await
            .map_err(|e| e.to_string())?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 || keys.len() >= MAX_WORKERS {
            break;
        }
    }
    keys.truncate(MAX_WORKERS);
    Ok(keys)
}

/// Every entry and its time to live (ms; negative when it has none or is
/// gone), in one round trip.
async fn entries(
    c: &mut ConnectionManager,
    keys: &[String],
) -> Result<Vec<(Option<String>, i64)>, String> {
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("GET").arg(key).cmd("PTTL").arg(key);
    }
    let answers = pipe
        .query_async::<Vec<redis::Value>>(c)
        .await
        .map_err(|e| e.to_string())?
        .chunks(2)
        .map(|pair| {
            let json = pair
                .first()
                .and_then(|v| redis::from_redis_value(v.clone()).ok());
            let ttl = pair
                .get(1)
                .and_then(|v| redis::from_redis_value(v.clone()).ok());
            (json, ttl.unwrap_or(-2))
        })
        .collect();
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_id_is_read_from_info_server() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:9f3c1a\r\ntcp_port:6379\r\n";
        assert_eq!(parse_run_id(info).as_deref(), Some("9f3c1a"));
        assert_eq!(parse_run_id("# Server\r\nredis_version:7.0.15\r\n"), None);
        assert_eq!(parse_run_id("run_id:\r\n"), None);
    }

    #[test]
    fn only_urls_a_pattern_matches_whole_are_allowed() {
        let patterns: Vec<glob::Pattern> = ["http://worker-*:7001", "http://10.0.*:7001"]
            .iter()
            .map(|p| glob::Pattern::new(p).expect("pattern"))
            .collect();
        assert!(allowed(&patterns, "http://worker-2:7001"));
        assert!(allowed(&patterns, "http://10.0.3.4:7001"));
        assert!(!allowed(&patterns, "http://evil.example:7001"));
        assert!(!allowed(&patterns, "http://worker-2:7001.evil.example:80"));
        assert!(!allowed(&patterns, "http://10.0.3.4:7002"));
        assert!(!allowed(&[], "http://worker-2:7001"), "nothing by default");
    }
}
