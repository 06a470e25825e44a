//! Parsing and judging, on replies written out by hand.

use super::*;
use crate::doctor::Status;
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
