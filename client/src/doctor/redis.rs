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

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use redis::aio::MultiplexedConnection;
use serde::Serialize;
use serde_json::json;

use super::{Findings, Status};

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
/// The worker registry's keys (`tts_proto::registry`).
pub const REGISTRY_PREFIX: &str = tts_proto::registry::KEY_PREFIX;
/// The phrase cache's keys, as `orchestrator/src/cache.rs` names them:
/// entries `tts:phrase:<sha256>`, the index `tts:phrase-index` and the
/// sizes `tts:phrase-sizes`.
pub const CACHE_PREFIX: &str = "tts:phrase";
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

/// One slow-log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlowEntry {
    /// Its id.
    pub id: u64,
    /// When it ran, Unix seconds.
    pub at_unix_s: u64,
    /// How long it ran, µs.
    pub duration_us: u64,
    /// The command and its arguments, cut to 60 characters.
    pub command: String,
}

/// The entries of a `SLOWLOG GET` reply (an entry not shaped like one is
/// skipped).
pub fn parse_slowlog(reply: &redis::Value) -> Vec<SlowEntry> {
    let redis::Value::Array(entries) = reply else {
        return Vec::new();
    };
    entries.iter().filter_map(slow_entry).collect()
}

fn slow_entry(entry: &redis::Value) -> Option<SlowEntry> {
    let redis::Value::Array(fields) = entry else {
        return None;
    };
    let int = |i: usize| match fields.get(i)? {
        redis::Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    };
    let Some(redis::Value::Array(args)) = fields.get(3) else {
        return None;
    };
    let words: Vec<String> = args.iter().filter_map(word).collect();
    Some(SlowEntry {
        id: int(0)?,
        at_unix_s: int(1)?,
        duration_us: int(2)?,
        command: cut(&words.join(" "), COMMAND_CHARS),
    })
}

fn word(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        redis::Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn cut(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// A numeric field of an `INFO` reply (`name:value` lines).
pub fn info_field(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .filter_map(|l| l.trim_end().split_once(':'))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
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

/// Scans the keyspace (at most [`MAX_KEYS`] keys) and sums `MEMORY USAGE`
/// by prefix.
async fn memory_by_prefix(conn: &mut MultiplexedConnection) -> Result<KeyMemory, CallError> {
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

/// The findings when Redis cannot be reached at all.
pub fn unreachable(url: &str, error: &dyn std::fmt::Display) -> Findings {
    let detail = format!(
        "cannot reach Redis at {url}: {error}; point at it with --redis URL (or TTS_REDIS_URL)"
    );
    Findings {
        columns: columns(),
        rows: vec![vec![
            "redis".into(),
            Status::Fail.as_str().into(),
            detail.clone(),
        ]],
        status: Status::Fail,
        detail: json!({"url": url, "status": Status::Fail, "error": detail}),
    }
}

fn columns() -> Vec<String> {
    ["check", "status", "detail"].map(String::from).to_vec()
}

/// Judges a snapshot: `Warn` for a slow-log entry over [`SLOW_US`], used
/// memory above [`FULL_FRACTION`] of a set `maxmemory`, or a part that
/// could not be fetched.
pub fn report(s: &Snapshot) -> Findings {
    let field = |info: &Result<String, String>, name| {
        info.as_deref().ok().and_then(|i| info_field(i, name))
    };
    let used = field(&s.memory_info, "used_memory");
    let max = field(&s.memory_info, "maxmemory");
    let clients = field(&s.clients_info, "connected_clients");
    let mut rows = vec![
        row("PING", Status::Ok, format!("{:.3} ms", s.ping_ms)),
        match (&s.memory_info, used) {
            (Err(e), _) => row("memory", Status::Warn, e.clone()),
            (Ok(_), None) => row("memory", Status::Warn, "no used_memory in INFO".into()),
            (Ok(_), Some(used)) => memory_row(used, max.unwrap_or(0)),
        },
        match &s.clients_info {
            Err(e) => row("clients", Status::Warn, e.clone()),
            Ok(_) => row(
                "clients",
                Status::Ok,
                format!("{} connected", clients.unwrap_or(0)),
            ),
        },
    ];
    rows.extend(part_rows("keys", &s.keys, key_rows));
    rows.extend(part_rows("slow log", &s.slowlog, |entries| {
        slow_rows(entries)
    }));
    let status = if rows.iter().any(|r| r[1] == Status::Warn.as_str()) {
        Status::Warn
    } else {
        Status::Ok
    };
    let detail = detail(s, status, [used, max, clients]);
    Findings {
        columns: columns(),
        rows,
        status,
        detail,
    }
}

/// The JSON of a report; `numbers` are used memory, maxmemory and
/// connected clients, as read from `INFO`.
fn detail(s: &Snapshot, status: Status, numbers: [Option<u64>; 3]) -> serde_json::Value {
    let [used, max, clients] = numbers;
    json!({
        "url": s.url,
        "status": status,
        "ping_ms": s.ping_ms,
        "used_memory": used,
        "maxmemory": max,
        "connected_clients": clients,
        "keys": s.keys.as_ref().ok(),
        "slowlog": s.slowlog.as_ref().ok(),
        "errors": {
            "slowlog": s.slowlog.as_ref().err(),
            "memory": s.memory_info.as_ref().err(),
            "clients": s.clients_info.as_ref().err(),
            "keys": s.keys.as_ref().err(),
        },
    })
}

/// The rows of a part that was fetched, or one `Warn` row saying why not.
fn part_rows<T>(
    check: &str,
    part: &Result<T, String>,
    rows: impl FnOnce(&T) -> Vec<Vec<String>>,
) -> Vec<Vec<String>> {
    match part {
        Ok(value) => rows(value),
        Err(e) => vec![row(check, Status::Warn, e.clone())],
    }
}

fn slow_rows(entries: &[SlowEntry]) -> Vec<Vec<String>> {
    if entries.is_empty() {
        return vec![row("slow log", Status::Ok, "empty".into())];
    }
    entries.iter().map(slow_row).collect()
}

fn row(check: &str, status: Status, detail: String) -> Vec<String> {
    vec![check.to_owned(), status.as_str().to_owned(), detail]
}

fn memory_row(used: u64, max: u64) -> Vec<String> {
    if max == 0 {
        return row(
            "memory",
            Status::Ok,
            format!("{} used; no maxmemory set", bytes(used)),
        );
    }
    let fraction = used as f64 / max as f64;
    let status = if fraction > FULL_FRACTION {
        Status::Warn
    } else {
        Status::Ok
    };
    let detail = format!(
        "{} used of maxmemory {} ({:.0} %)",
        bytes(used),
        bytes(max),
        fraction * 100.0
    );
    row("memory", status, detail)
}

fn key_rows(k: &KeyMemory) -> Vec<Vec<String>> {
    let usage = |u: &Usage| format!("{} keys, {}", u.keys, bytes(u.bytes));
    let scanned = if k.truncated {
        format!("{} (stopped at the bound: the sums are partial)", k.scanned)
    } else {
        k.scanned.to_string()
    };
    vec![
        row(
            &format!("keys {REGISTRY_PREFIX}* (registry)"),
            Status::Ok,
            usage(&k.registry),
        ),
        row(
            &format!("keys {CACHE_PREFIX}* (cache)"),
            Status::Ok,
            usage(&k.cache),
        ),
        row("keys: other", Status::Ok, usage(&k.other)),
        row("keys scanned", Status::Ok, scanned),
    ]
}

fn slow_row(e: &SlowEntry) -> Vec<String> {
    let status = if e.duration_us > SLOW_US {
        Status::Warn
    } else {
        Status::Ok
    };
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(e.at_unix_s);
    let detail = format!(
        "{}, {:.3} ms, {}",
        humantime::format_rfc3339_seconds(at),
        e.duration_us as f64 / 1e3,
        e.command
    );
    row(&format!("slow log #{}", e.id), status, detail)
}

/// `n` bytes for people: B, KiB, MiB or GiB.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    let mut value = n as f64;
    if value < 1024.0 {
        return format!("{n} B");
    }
    let mut unit = UNITS[0];
    for u in UNITS {
        value /= 1024.0;
        unit = u;
        if value < 1024.0 {
            break;
        }
    }
    format!("{value:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// A `SLOWLOG GET` entry as Redis sends it.
    fn entry(id: i64, at: i64, us: i64, args: &[&str]) -> Value {
        Value::Array(vec![
            Value::Int(id),
            Value::Int(at),
            Value::Int(us),
            Value::Array(args.iter().map(|a| bulk(a)).collect()),
            bulk("127.0.0.1:50000"),
            bulk(""),
        ])
    }

    fn snapshot(slowlog: Vec<SlowEntry>, memory_info: &str) -> Snapshot {
        let mut keys = KeyMemory::default();
        keys.add(b"tts:worker:http://127.0.0.1:50051", Some(300));
        keys.add(b"tts:phrase:abcd", Some(10_000));
        keys.add(b"tts:phrase-index", Some(200));
        keys.add(b"session:1", None);
        Snapshot {
            url: "redis://127.0.0.1:6379".into(),
            ping_ms: 0.2,
            slowlog: Ok(slowlog),
            memory_info: Ok(memory_info.into()),
            clients_info: Ok("# Clients\r\nconnected_clients:3\r\n".into()),
            keys: Ok(keys),
        }
    }

    fn slow(us: u64) -> SlowEntry {
        SlowEntry {
            id: 7,
            at_unix_s: 1_767_225_600,
            duration_us: us,
            command: "DEBUG SLEEP 0.02".into(),
        }
    }

    const MEMORY: &str =
        "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nmaxmemory:0\r\n";

    #[test]
    fn slowlog_entries_are_parsed_and_long_commands_cut() {
        let long = "x".repeat(100);
        let reply = Value::Array(vec![
            entry(12, 1_767_225_600, 20_500, &["DEBUG", "SLEEP", "0.02"]),
            entry(11, 1_767_225_599, 1_200, &["SET", "k", &long]),
            Value::Int(3),
        ]);
        let entries = parse_slowlog(&reply);
        assert_eq!(entries.len(), 2, "the malformed entry is skipped");
        assert_eq!(
            entries[0],
            SlowEntry {
                id: 12,
                at_unix_s: 1_767_225_600,
                duration_us: 20_500,
                command: "DEBUG SLEEP 0.02".into()
            }
        );
        assert_eq!(entries[1].command.chars().count(), COMMAND_CHARS + 1);
        assert!(entries[1].command.starts_with("SET k xxx") && entries[1].command.ends_with('…'));
        assert!(parse_slowlog(&Value::Nil).is_empty());
    }

    #[test]
    fn info_fields_are_read_by_their_exact_name() {
        assert_eq!(info_field(MEMORY, "used_memory"), Some(1_048_576));
        assert_eq!(info_field(MEMORY, "maxmemory"), Some(0));
        assert_eq!(
            info_field(MEMORY, "used_memory_human"),
            None,
            "not a number"
        );
        assert_eq!(info_field(MEMORY, "used"), None);
    }

    #[test]
    fn keys_are_summed_by_prefix() {
        assert_eq!(kind_of(b"tts:worker:http://w:1"), KeyKind::Registry);
        assert_eq!(kind_of(b"tts:phrase:00ff"), KeyKind::Cache);
        assert_eq!(kind_of(b"tts:phrase-sizes"), KeyKind::Cache);
        assert_eq!(kind_of(b"tts:workers"), KeyKind::Other);
        let k = snapshot(Vec::new(), MEMORY).keys.expect("keys");
        assert_eq!(
            k.registry,
            Usage {
                keys: 1,
                bytes: 300
            }
        );
        assert_eq!(
            k.cache,
            Usage {
                keys: 2,
                bytes: 10_200
            }
        );
        assert_eq!(k.other, Usage { keys: 1, bytes: 0 });
        assert_eq!(k.scanned, 4);
    }

    #[test]
    fn a_quiet_redis_is_ok_and_says_what_it_holds() {
        let f = report(&snapshot(vec![slow(2_000)], MEMORY));
        assert_eq!(f.status, Status::Ok, "{}", f.to_table());
        let table = f.to_table();
        assert!(table.contains("1.0 MiB used; no maxmemory set"), "{table}");
        assert!(table.contains("3 connected"), "{table}");
        assert!(table.contains("2 keys, 10.0 KiB"), "{table}");
        assert!(
            table.contains("2026-01-01T00:00:00Z, 2.000 ms, DEBUG SLEEP 0.02"),
            "{table}"
        );
        assert_eq!(f.detail["keys"]["registry"]["bytes"], 300);
        assert_eq!(f.detail["slowlog"][0]["duration_us"], 2_000);
    }

    #[test]
    fn slow_commands_and_full_memory_warn() {
        let f = report(&snapshot(vec![slow(20_500)], MEMORY));
        assert_eq!(f.status, Status::Warn);
        assert!(
            f.rows
                .iter()
                .any(|r| r[0] == "slow log #7" && r[1] == "WARN")
        );
        let full = "used_memory:950\r\nmaxmemory:1000\r\n";
        let f = report(&snapshot(Vec::new(), full));
        assert_eq!(f.status, Status::Warn);
        assert!(f.to_table().contains("(95 %)"), "{}", f.to_table());
        let roomy = "used_memory:850\r\nmaxmemory:1000\r\n";
        assert_eq!(report(&snapshot(Vec::new(), roomy)).status, Status::Ok);
        let mut broken = snapshot(Vec::new(), MEMORY);
        broken.keys = Err("SCAN: no answer within 2s".into());
        let f = report(&broken);
        assert_eq!(f.status, Status::Warn);
        assert_eq!(f.detail["errors"]["keys"], "SCAN: no answer within 2s");
    }

    #[test]
    fn an_unreachable_redis_fails_naming_the_url_without_its_password() {
        let url = redacted("redis://admin:s3cret@10.0.0.1:6379/0");
        assert_eq!(url, "redis://admin:***@10.0.0.1:6379/0");
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        let f = unreachable(&url, &"connection refused");
        assert_eq!(f.status, Status::Fail);
        let message = f.detail["error"].as_str().unwrap_or_default();
        assert!(
            message.contains("redis://admin:***@10.0.0.1:6379/0"),
            "{message}"
        );
        assert!(
            message.contains("--redis") && !message.contains("s3cret"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_a_failure() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let url = format!("redis://127.0.0.1:{port}");
        let f = run(&url).await;
        assert_eq!(f.status, Status::Fail);
        assert!(f.to_table().contains(&url), "{}", f.to_table());
    }
}
