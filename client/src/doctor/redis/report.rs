//! Judging a snapshot: the table and the JSON of `doctor redis`.

use std::time::{Duration, SystemTime};

use serde_json::json;

use super::{
    CACHE_PREFIX, FULL_FRACTION, KeyMemory, REGISTRY_PREFIX, SLOW_US, SlowEntry, Snapshot, Usage,
};
use crate::doctor::{Findings, Status};

/// A numeric field of an `INFO` reply (`name:value` lines).
pub fn info_field(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .filter_map(|l| l.trim_end().split_once(':'))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
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
