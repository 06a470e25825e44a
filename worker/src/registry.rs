//! The worker's entry in the Redis registry: written once the voices are
//! loaded, renewed every third of its time to live, deleted when the
//! worker drains. Redis being away only delays the entry: the worker
//! serves on, and the heartbeat reconnects by itself.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tts_redis::registry::{Entry, key};

use crate::service::LoadedVoices;

/// Keeps this worker's entry alive until `stop`, then deletes it.
pub(crate) async fn announce(
    redis_url: String,
    url: String,
    ttl: Duration,
    voices: Arc<LoadedVoices>,
    stop: CancellationToken,
) {
    let mut conn: Option<ConnectionManager> = None;
    let mut written = false;
    let mut failing = false;
    // Nothing to announce until the voices are loaded.
    let loaded = tokio::select! {
        _ = stop.cancelled() => return,
        loaded = voices.wait() => loaded,
    };
    let Some(loaded) = loaded else { return };
    let entry = Entry {
        url: url.clone(),
        voices: loaded.names(),
        threads: loaded.pool.threads() as u32,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    }
    .to_json();
    // The first announcement follows readiness at once (an interval's
    // first tick is immediate).
    let mut tick = tokio::time::interval(ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        match renew(&redis_url, &mut conn, &url, &entry, ttl).await {
            Ok(()) => {
                if !written || failing {
                    info!(%url, ttl_ms = ttl.as_millis() as u64, "announced in the registry");
                }
                written = true;
                failing = false;
            }
            Err(e) => {
                if !failing {
                    warn!(%url, error = %e, "cannot renew the registry entry; retrying every heartbeat");
                }
                failing = true;
            }
        }
    }
    if written && let Ok(c) = connection(&redis_url, &mut conn).await {
        let _ = redis::cmd("DEL").arg(key(&url)).query_async::<()>(c).await;
        info!(%url, "removed from the registry");
    }
}

/// Writes the entry with its time to live.
async fn renew(
    redis_url: &str,
    conn: &mut Option<ConnectionManager>,
    url: &str,
    entry: &str,
    ttl: Duration,
) -> Result<(), String> {
    redis::cmd("SET")
        .arg(key(url))
        .arg(entry)
        .arg("PX")
        .arg(ttl.as_millis() as u64)
        .query_async::<()>(connection(redis_url, conn).await?)
        .await
        .map_err(|e| e.to_string())
}

/// The connection, made on first use (a manager reconnects by itself after
/// that; one that could not be made is tried again next time).
async fn connection<'a>(
    url: &str,
    conn: &'a mut Option<ConnectionManager>,
) -> Result<&'a mut ConnectionManager, String> {
    if conn.is_none() {
        *conn = Some(tts_redis::connect(url).await?);
    }
    conn.as_mut().ok_or_else(|| "no connection".to_owned())
}
