//! Memory by key prefix: the keyspace scanned, `MEMORY USAGE` summed as
//! the worker registry, the phrase cache and everything else.

use redis::aio::MultiplexedConnection;
use serde::Serialize;

use super::{BATCH, CACHE_PREFIX, CallError, MAX_KEYS, REGISTRY_PREFIX, call};

/// Which part of the keyspace a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// The worker registry.
    Registry,
    /// The phrase cache.
    Cache,
    /// Anything else.
    Other,
}

/// The part of the keyspace `key` belongs to.
pub fn kind_of(key: &[u8]) -> KeyKind {
    if key.starts_with(REGISTRY_PREFIX.as_bytes()) {
        KeyKind::Registry
    } else if key.starts_with(CACHE_PREFIX.as_bytes()) {
        KeyKind::Cache
    } else {
        KeyKind::Other
    }
}

/// Keys and their memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Keys.
    pub keys: u64,
    /// Bytes, by `MEMORY USAGE`.
    pub bytes: u64,
}

/// Memory by key prefix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KeyMemory {
    /// [`REGISTRY_PREFIX`] keys.
    pub registry: Usage,
    /// [`CACHE_PREFIX`] keys.
    pub cache: Usage,
    /// Every other key.
    pub other: Usage,
    /// Keys measured (`SCAN` may return a key twice).
    pub scanned: usize,
    /// Whether the scan stopped at [`MAX_KEYS`] before the end.
    pub truncated: bool,
}

impl KeyMemory {
    /// Counts `key` of `bytes` (`None`: gone since the scan, still counted).
    pub fn add(&mut self, key: &[u8], bytes: Option<u64>) {
        let usage = match kind_of(key) {
            KeyKind::Registry => &mut self.registry,
            KeyKind::Cache => &mut self.cache,
            KeyKind::Other => &mut self.other,
        };
        usage.keys += 1;
        usage.bytes += bytes.unwrap_or(0);
        self.scanned += 1;
    }
}

/// Scans the keyspace (at most [`MAX_KEYS`] keys) and sums `MEMORY USAGE`
/// by prefix.
pub(super) async fn memory_by_prefix(
    conn: &mut MultiplexedConnection,
) -> Result<KeyMemory, CallError> {
    let mut memory = KeyMemory::default();
    let mut cursor: u64 = 0;
    loop {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor).arg("COUNT").arg(BATCH);
        let (next, keys): (u64, Vec<Vec<u8>>) = call("SCAN", scan.query_async(conn)).await?;
        let room = MAX_KEYS - memory.scanned;
        measure(conn, &keys[..keys.len().min(room)], &mut memory).await?;
        cursor = next;
        if cursor == 0 {
            return Ok(memory);
        }
        if memory.scanned >= MAX_KEYS {
            memory.truncated = true;
            return Ok(memory);
        }
    }
}

/// `MEMORY USAGE` of `keys`, one pipeline per [`BATCH`] keys.
async fn measure(
    conn: &mut MultiplexedConnection,
    keys: &[Vec<u8>],
    memory: &mut KeyMemory,
) -> Result<(), CallError> {
    for batch in keys.chunks(BATCH) {
        let mut pipe = redis::pipe();
        for key in batch {
            pipe.cmd("MEMORY").arg("USAGE").arg(key);
        }
        let sizes: Vec<Option<u64>> = call("MEMORY USAGE", pipe.query_async(conn)).await?;
        for (key, bytes) in batch.iter().zip(sizes) {
            memory.add(key, bytes);
        }
    }
    Ok(())
}
