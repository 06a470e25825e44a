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
//! worker's frames, and an entry damaged in Redis fails verification. A hit
//! streams with the same contract: `start`, numbered frames, then `end`;
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

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};
use tracing::{debug, warn};
use tts_proto::v1::AudioFrame;
use tts_redis::keys::{PHRASE_INDEX, PHRASE_PREFIX, PHRASE_SIZES};

use crate::config::OrchestratorConfig;
use crate::metrics;
use crate::pool::Pool;
use crate::protocol::Delivery;
use crate::request::CacheKey;

/// How long a lookup may take before it counts as a miss.
const LOOKUP_TIMEOUT: Duration = Duration::from_millis(100);
/// How long the cache is skipped after Redis failed to answer.
const BACK_OFF: Duration = Duration::from_secs(1);
/// Audio sent ahead of the playout clock on a real-time replay (as the
/// worker does).
const SEND_AHEAD: Duration = Duration::from_secs(1);
const FRAME_PERIOD: Duration = Duration::from_millis(20);
/// The entry format's first bytes.
const MAGIC: &[u8] = b"TTSPC2";

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

/// One cached frame: samples, the worker's CRC-32C, the payload.
type CachedFrame = (u32, u32, Vec<u8>);

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
            Some((voice, frames)) => {
                metrics::phrase_cache_lookup("hit");
                Some(Replay {
                    frames: frames.into(),
                    voice,
                    sequence: 0,
                    started: Instant::now(),
                    delivery,
                })
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
        Recording {
            key,
            voice: String::new(),
            frames: Vec::new(),
            bytes: 0,
            limit: self.settings.max_bytes / 4,
            overflow: false,
        }
    }

    /// Stores a completed request's frames (in the background: the request
    /// has already ended).
    pub(crate) fn store(self: &Arc<Self>, recording: Recording) {
        if recording.overflow || recording.frames.is_empty() {
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

    async fn insert(&self, rec: &Recording) -> Result<(), String> {
        let value = encode(&rec.voice, &rec.frames);
        let size = value.len() as u64;
        let mut c = self.connection().await?;
        let e = |e: redis::RedisError| e.to_string();
        let now_ms = epoch_ms();
        // Entries that expired by themselves leave the index and sizes.
        let expired: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(PHRASE_INDEX)
            .arg("-inf")
            .arg(now_ms)
            .query_async(&mut c)
            .await
            .map_err(e)?;
        if !expired.is_empty() {
            redis::pipe()
                .cmd("ZREM")
                .arg(PHRASE_INDEX)
                .arg(&expired)
                .cmd("HDEL")
                .arg(PHRASE_SIZES)
                .arg(&expired)
                .query_async::<()>(&mut c)
                .await
                .map_err(e)?;
        }
        let sizes: Vec<u64> = redis::cmd("HVALS")
            .arg(PHRASE_SIZES)
            .query_async(&mut c)
            .await
            .map_err(e)?;
        let mut total: u64 = sizes.iter().sum();
        // Evict the entries closest to expiry (the oldest) until it fits.
        while total + size > self.settings.max_bytes {
            let oldest: Vec<(String, f64)> = redis::cmd("ZPOPMIN")
                .arg(PHRASE_INDEX)
                .query_async(&mut c)
                .await
                .map_err(e)?;
            let Some((victim, _)) = oldest.into_iter().next() else {
                break;
            };
            let (freed,): (Option<u64>,) = redis::pipe()
                .cmd("HGET")
                .arg(PHRASE_SIZES)
                .arg(&victim)
                .cmd("HDEL")
                .arg(PHRASE_SIZES)
                .arg(&victim)
                .ignore()
                .cmd("DEL")
                .arg(&victim)
                .ignore()
                .query_async(&mut c)
                .await
                .map_err(e)?;
            total = total.saturating_sub(freed.unwrap_or(0));
            metrics::phrase_cache_evicted();
        }
        let ttl_ms = self.settings.ttl.as_millis() as u64;
        redis::pipe()
            .cmd("SET")
            .arg(&rec.key)
            .arg(value)
            .arg("PX")
            .arg(ttl_ms)
            .cmd("ZADD")
            .arg(PHRASE_INDEX)
            .arg(now_ms + ttl_ms)
            .arg(&rec.key)
            .cmd("HSET")
            .arg(PHRASE_SIZES)
            .arg(&rec.key)
            .arg(size)
            .query_async::<()>(&mut c)
            .await
            .map_err(e)?;
        metrics::phrase_cache_bytes(total + size);
        Ok(())
    }
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A request's frames from the worker, as they came.
#[derive(Debug)]
pub(crate) struct Recording {
    key: String,
    voice: String,
    frames: Vec<CachedFrame>,
    bytes: u64,
    limit: u64,
    overflow: bool,
}

impl Recording {
    pub(crate) fn record(&mut self, frame: &AudioFrame) {
        if self.overflow {
            return;
        }
        self.bytes += frame.payload.len() as u64;
        if self.bytes > self.limit {
            // Too long to be worth a quarter of the cache: not kept.
            self.overflow = true;
            self.frames = Vec::new();
            return;
        }
        if self.voice.is_empty() {
            self.voice.clone_from(&frame.voice);
        }
        self.frames
            .push((frame.samples, frame.crc32c, frame.payload.clone()));
    }
}

/// A cached phrase played back as the worker would send it.
#[derive(Debug)]
pub(crate) struct Replay {
    frames: VecDeque<CachedFrame>,
    voice: String,
    sequence: u32,
    started: Instant,
    delivery: Delivery,
}

impl Replay {
    /// The next frame, on the real-time clock for real-time requests;
    /// `None` after the last.
    pub(crate) async fn next(&mut self) -> Option<AudioFrame> {
        let (samples, crc32c, payload) = self.frames.pop_front()?;
        if self.delivery == Delivery::Realtime {
            let due = (self.started + FRAME_PERIOD * self.sequence).checked_sub(SEND_AHEAD);
            if let Some(due) = due {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let frame = AudioFrame {
            sequence: self.sequence,
            crc32c,
            payload,
            last: self.frames.is_empty(),
            worker_ts_us: tts_frame::now_us(),
            samples,
            // Named on the first frame only, as a worker does.
            voice: if self.sequence == 0 {
                std::mem::take(&mut self.voice)
            } else {
                String::new()
            },
            words: Vec::new(),
        };
        self.sequence += 1;
        Some(frame)
    }
}

fn encode(voice: &str, frames: &[CachedFrame]) -> Vec<u8> {
    let body: usize = frames.iter().map(|(_, _, p)| 12 + p.len()).sum();
    let mut out = Vec::with_capacity(MAGIC.len() + 2 + voice.len() + body);
    out.extend_from_slice(MAGIC);
    let voice = &voice.as_bytes()[..voice.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(voice.len() as u16).to_le_bytes());
    out.extend_from_slice(voice);
    for (samples, crc, payload) in frames {
        out.extend_from_slice(&samples.to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
    }
    out
}

/// The voice and frames of an entry; `None` for anything malformed.
fn decode(bytes: &[u8]) -> Option<(String, Vec<CachedFrame>)> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let (len, rest) = rest.split_at_checked(2)?;
    let len = u16::from_le_bytes([len[0], len[1]]) as usize;
    let (voice, mut rest) = rest.split_at_checked(len)?;
    let voice = String::from_utf8(voice.to_vec()).ok()?;
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let (head, tail) = rest.split_at_checked(12)?;
        let word = |i: usize| head[i..i + 4].try_into().ok().map(u32::from_le_bytes);
        let (samples, crc, size) = (word(0)?, word(4)?, word(8)? as usize);
        if size > tts_frame::FRAME_SAMPLES * 2 {
            return None;
        }
        let (payload, tail) = tail.split_at_checked(size)?;
        frames.push((samples, crc, payload.to_vec()));
        rest = tail;
    }
    (!frames.is_empty()).then_some((voice, frames))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_garbage_does_not_decode() {
        let frames = vec![(960, 7, vec![1u8; 1920]), (100, 8, vec![2u8; 200])];
        let entry = encode("en_US-joe-medium", &frames);
        let (voice, back) = decode(&entry).expect("decodes");
        assert_eq!(voice, "en_US-joe-medium");
        assert_eq!(back, frames);
        for cut in [0, 3, MAGIC.len() + 1, entry.len() - 1] {
            assert!(decode(&entry[..cut]).is_none(), "cut at {cut}");
        }
        let mut oversized = encode("v", &[]);
        oversized.extend_from_slice(&960u32.to_le_bytes());
        oversized.extend_from_slice(&0u32.to_le_bytes());
        oversized.extend_from_slice(&4000u32.to_le_bytes());
        oversized.extend_from_slice(&[0; 4000]);
        assert!(decode(&oversized).is_none());
    }

    #[tokio::test]
    async fn a_replay_numbers_frames_keeps_their_checksums_and_marks_the_last() {
        let second = vec![2u8; 960];
        let frames = vec![
            (960, tts_frame::checksum(&[1u8; 1920]), vec![1u8; 1920]),
            (480, tts_frame::checksum(&second), second),
        ];
        let mut replay = Replay {
            frames: frames.into(),
            voice: "v".into(),
            sequence: 0,
            started: Instant::now(),
            delivery: Delivery::Realtime,
        };
        let a = replay.next().await.expect("first");
        let b = replay.next().await.expect("second");
        assert!(replay.next().await.is_none());
        assert_eq!((a.sequence, a.last), (0, false));
        assert_eq!((b.sequence, b.last, b.samples), (1, true, 480));
        assert_eq!(b.crc32c, tts_frame::checksum(&b.payload));
    }
}
