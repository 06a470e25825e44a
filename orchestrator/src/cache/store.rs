//! Storing an entry within the cache's byte bound.

use redis::aio::ConnectionManager;
use tts_redis::keys::{PHRASE_INDEX, PHRASE_SIZES};

use super::PhraseCache;
use super::entry::{Recording, encode};
use crate::metrics;

fn text(e: redis::RedisError) -> String {
    e.to_string()
}

impl PhraseCache {
    /// Stores `rec` within the byte bound: entries that expired by
    /// themselves leave the index first, then the closest to expiry are
    /// evicted until it fits.
    pub(super) async fn insert(&self, rec: &Recording) -> Result<(), String> {
        let value = encode(&rec.voice, &rec.frames);
        let size = value.len() as u64;
        let mut c = self.connection().await?;
        let now_ms = epoch_ms();
        forget_expired(&mut c, now_ms).await?;
        let total = self.evict_for(&mut c, size).await?;
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
            .map_err(text)?;
        metrics::phrase_cache_bytes(total + size);
        Ok(())
    }

    /// Evicts the entries closest to expiry (the oldest) until `size` more
    /// bytes fit; returns the bytes cached after the evictions.
    async fn evict_for(&self, c: &mut ConnectionManager, size: u64) -> Result<u64, String> {
        let sizes: Vec<u64> = redis::cmd("HVALS")
            .arg(PHRASE_SIZES)
            .query_async(c)
            .await
            .map_err(text)?;
        let mut total: u64 = sizes.iter().sum();
        while total + size > self.settings.max_bytes {
            let oldest: Vec<(String, f64)> = redis::cmd("ZPOPMIN")
                .arg(PHRASE_INDEX)
                .query_async(c)
                .await
                .map_err(text)?;
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
                .query_async(c)
                .await
                .map_err(text)?;
            total = total.saturating_sub(freed.unwrap_or(0));
            metrics::phrase_cache_evicted();
        }
        Ok(total)
    }
}

impl PhraseCache {
    /// Deletes an entry, with its place in the index and sizes.
    pub(super) async fn forget(&self, key: &str) -> Result<(), String> {
        let mut c = self.connection().await?;
        redis::pipe()
            .cmd("ZREM")
            .arg(PHRASE_INDEX)
            .arg(key)
            .cmd("HDEL")
            .arg(PHRASE_SIZES)
            .arg(key)
            .cmd("DEL")
            .arg(key)
            .query_async::<()>(&mut c)
            .await
            .map_err(text)
    }
}

/// Entries that expired by themselves leave the index and sizes.
async fn forget_expired(c: &mut ConnectionManager, now_ms: u64) -> Result<(), String> {
    let expired: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(PHRASE_INDEX)
        .arg("-inf")
        .arg(now_ms)
        .query_async(c)
        .await
        .map_err(text)?;
    if expired.is_empty() {
        return Ok(());
    }
    redis::pipe()
        .cmd("ZREM")
        .arg(PHRASE_INDEX)
        .arg(&expired)
        .cmd("HDEL")
        .arg(PHRASE_SIZES)
        .arg(&expired)
        .query_async::<()>(c)
        .await
        .map_err(text)
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
