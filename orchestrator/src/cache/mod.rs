//! The phrase cache: the worker's frames of completed requests, kept in
//! Redis and replayed for the same phrase.
//!
//! A phrase is keyed by a SHA-256 of the cache namespace, the voice that
//! speaks it and that voice's revision (as the workers list them: for
//! Piper, the CRC-32C of its model and configuration, so a new model is a
//! new key), the speed and noise options, and the text with its
//! whitespace collapsed. Until a worker has listed the voice, its requests
//! are not cached. The value is the worker's 48 kHz frames as they came (not the
//! client's encoding: a hit is converted like any stream, so one entry
//! serves every format), each with the worker's own CRC-32C, so the
//! checksum still runs end to end: a hit is verified at the same hop as the
//! worker's frames; an entry damaged in Redis is caught before its first
//! frame (every frame's checksum is checked at lookup), deleted, and the
//! phrase spoken by a worker instead. A hit streams with the same
//! contract: `start`, numbered frames, then `end`;
//! real-time requests are paced like the worker paces them (a second
//! ahead, then one frame per 20 ms).
//!
//! Bound: every entry expires after `--phrase-cache-ttl-secs`, and before
//! storing one the orchestrator evicts the entries closest to expiry until
//! the total stays within `--phrase-cache-max-bytes` (an index sorted set
//! and a size hash beside the entries; orchestrators sharing a Redis share
//! the bound, each enforcing it when it stores). Redis being slow or away
//! only costs a miss: a lookup waits at most [`LOOKUP_TIMEOUT`], and after a
//! failure the cache is skipped for [`BACK_OFF`] without waiting at all.

mod entry;
mod store;

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};
use tracing::{debug, warn};
use tts_redis::keys::PHRASE_PREFIX;

use crate::config::OrchestratorConfig;
use crate::metrics;
use crate::pool::Pool;
use crate::protocol::Delivery;
use crate::request::CacheKey;
use entry::decode;
pub(crate) use entry::{Recording, Replay};

/// How long a lookup may take before it counts as a miss.
const LOOKUP_TIMEOUT: Duration = Duration::from_millis(100);
/// How long the cache is skipped after Redis failed to answer.
const BACK_OFF: Duration = Duration::from_secs(1);

/// What the cache keeps and for how long.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) redis_url: String,
    pub(crate) ttl: Duration,
    pub(crate) max_bytes: u64,
    pub(crate) max_chars: usize,
    pub(crate) namespace: String,
}

impl Settings {
    /// The phrase cache's settings, when it is enabled.
    pub(crate) fn from_config(config: &OrchestratorConfig) -> Option<Self> {
        let redis_url = config.redis_url.clone().filter(|_| config.phrase_cache)?;
        Some(Self {
            redis_url,
            ttl: Duration::from_secs(config.phrase_cache_ttl_secs),
            max_bytes: config.phrase_cache_max_bytes,
            max_chars: config.phrase_cache_max_chars,
            namespace: config.phrase_cache_namespace.clone(),
        })
    }
}

/// The phrase cache of one orchestrator.
pub(crate) struct PhraseCache {
    settings: Settings,
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
    /// Until when Redis counts as away (after a failed call).
    away_until: std::sync::Mutex<Option<Instant>>,
}

impl PhraseCache {
    pub(crate) fn new(settings: Settings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            conn: tokio::sync::Mutex::new(None),
            away_until: std::sync::Mutex::new(None),
        })
    }

    /// The key of a request's audio, when it may be cached: text short
    /// enough, for a voice whose revision the workers have said.
    pub(crate) fn key(&self, key: &CacheKey<'_>, pool: &Pool) -> Option<String> {
        if key.text.chars().count() > self.settings.max_chars {
            return None;
        }
        let (voice, revision) = pool.revision(key.voice)?;
        let text = key.text.split_whitespace().collect::<Vec<_>>().join(" ");
        let noise = |v: Option<f32>| v.map_or_else(|| "-".to_owned(), |v| v.to_bits().to_string());
        let mut hash = Sha256::new();
        for part in [
            self.settings.namespace.as_str(),
            &voice,
            &revision,
            &key.speed.get().to_bits().to_string(),
            &noise(key.noise_scale),
            &noise(key.noise_w),
            &text,
        ] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        let digest = hash.finalize();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Some(format!("{PHRASE_PREFIX}{hex}"))
    }

    fn away(&self) -> bool {
        let until = self.away_until.lock().unwrap_or_else(|e| e.into_inner());
        until.is_some_and(|t| Instant::now() < t)
    }

    fn failed(&self) {
        *self.away_until.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + BACK_OFF);
    }

    async fn connection(&self) -> Result<ConnectionManager, String> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        let made = tts_redis::connect(&self.settings.redis_url).await?;
        *conn = Some(made.clone());
        Ok(made)
    }

    /// The phrase's frames, if cached (a miss when Redis does not answer
    /// within [`LOOKUP_TIMEOUT`]).
    pub(crate) async fn lookup(&self, key: &str, delivery: Delivery) -> Option<Replay> {
        if self.away() {
            metrics::phrase_cache_lookup("error");
            return None;
        }
        let get = async {
            let mut c = self.connection().await?;
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<Vec<u8>>>(&mut c)
                .await
                .map_err(|e| e.to_string())
        };
        let found = match tokio::time::timeout(LOOKUP_TIMEOUT, get).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                debug!(error = %e, "phrase cache lookup failed");
                self.failed();
                metrics::phrase_cache_lookup("error");
                return None;
            }
            Err(_) => {
                self.failed();
                metrics::phrase_cache_lookup("error");
                return None;
            }
        };
        let Some(bytes) = found else {
            metrics::phrase_cache_lookup("miss");
            return None;
        };
        match decode(&bytes) {
            Some((_, frames)) if !frames.iter().all(entry::intact) => {
                // Replayed, it would fail its checksum at the first bad
                // frame; the worker speaks it instead, and a good copy
                // takes its place.
                warn!(
                    key,
                    "a phrase cache entry fails its checksum: deleted, spoken by a worker"
                );
                metrics::phrase_cache_lookup("corrupt");
                match tokio::time::timeout(LOOKUP_TIMEOUT, self.forget(key)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        debug!(error = %e, "deleting a corrupt phrase cache entry failed")
                    }
                    Err(_) => debug!("deleting a corrupt phrase cache entry timed out"),
                }
                None
            }
            Some((voice, frames)) => {
                metrics::phrase_cache_lookup("hit");
                Some(Replay::new(voice, frames, delivery))
            }
            None => {
                warn!(key, "a phrase cache entry does not decode; ignored");
                metrics::phrase_cache_lookup("error");
                None
            }
        }
    }

    /// Records a request's frames until it is stored or given up.
    pub(crate) fn recording(&self, key: String) -> Recording {
        Recording::new(key, self.settings.max_bytes / 4)
    }

    /// Stores a completed request's frames (in the background: the request
    /// has already ended).
    pub(crate) fn store(self: &Arc<Self>, recording: Recording) {
        if !recording.storable() {
            metrics::phrase_cache_stored("too_big");
            return;
        }
        if self.away() {
            metrics::phrase_cache_stored("error");
            return;
        }
        let cache = Arc::clone(self);
        tokio::spawn(async move {
            match cache.insert(&recording).await {
                Ok(()) => metrics::phrase_cache_stored("stored"),
                Err(e) => {
                    cache.failed();
                    metrics::phrase_cache_stored("error");
                    debug!(error = %e, "phrase cache store failed");
                }
            }
        });
    }
}
