//! Workers found through Redis: every [`REFRESH`] the registry's entries
//! are read (`SCAN` for the worker keys, then `GET` and `PTTL` for each)
//! and each is added to the pool or has its expiry renewed; a worker is
//! dropped when its entry's time to live runs out. Redis being away keeps
//! the static workers serving (readiness says `degraded`); the connection
//! is remade by itself.

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
/// Most entries read per refresh.
const MAX_WORKERS: usize = 256;

/// Follows the registry until `stop`.
pub(crate) async fn follow(url: String, pool: Arc<Pool>, stop: CancellationToken) {
    let mut conn: Option<ConnectionManager> = None;
    let mut failing = false;
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match refresh(&url, &mut conn, &pool).await {
            Ok(()) if failing => {
                info!("registry readable again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) => {
                if !failing {
                    warn!(error = %e, "cannot read the worker registry; static workers serve on");
                }
                failing = true;
            }
        }
        for gone in pool.expire(Instant::now()) {
            info!(worker = %gone, "registry entry expired: worker dropped");
        }
    }
}

async fn refresh(
    url: &str,
    conn: &mut Option<ConnectionManager>,
    pool: &Pool,
) -> Result<(), String> {
    if conn.is_none() {
        *conn = Some(tts_redis::connect(url).await?);
    }
    let Some(c) = conn.as_mut() else {
        return Ok(());
    };
    let keys = worker_keys(c).await?;
    if keys.is_empty() {
        return Ok(());
    }
    for (json, ttl_ms) in entries(c, &keys).await? {
        let Some(entry) = json.as_deref().and_then(Entry::from_json) else {
            continue;
        };
        // An entry without an expiry would never go: not a heartbeat.
        if ttl_ms <= 0 {
            continue;
        }
        let expires = Instant::now() + Duration::from_millis(ttl_ms as u64);
        match pool.add(&entry.url, Some(expires)) {
            Ok(true) => {
                metrics::registry_added();
                info!(worker = %entry.url, voices = entry.voices.len(), threads = entry.threads,
                    version = %entry.version, "worker registered");
                pool.poll_now(&entry.url).await;
            }
            Ok(false) => {}
            Err(e) => warn!(worker = %entry.url, error = %e, "registry entry ignored"),
        }
    }
    Ok(())
}

/// The registry's worker keys (`SCAN`), at most [`MAX_WORKERS`].
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
