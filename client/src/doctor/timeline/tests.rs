//! The timeline from hand-written log files.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::doctor::Status;

/// A directory of its own for each test.
fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tts-timeline-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

fn at(s: &str) -> SystemTime {
    humantime::parse_rfc3339(s).expect("a time")
}

fn everything() -> Range {
    Range {
        since: SystemTime::UNIX_EPOCH,
        until: None,
    }
}

fn column<'a>(f: &'a Findings, field: &str) -> Vec<&'a str> {
    f.detail["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|r| r[field].as_str().unwrap_or(""))
        .collect()
}

#[test]
fn merges_two_files_out_of_order_into_one_timeline() {
    let d = dir("merge");
    let (orch, worker) = (d.join("orchestrator.log"), d.join("worker.log"));
    std::fs::write(
        &orch,
        concat!(
            r#"{"timestamp":"2026-01-01T00:00:00.500000Z","level":"INFO","component":"orchestrator","message":"request finished","request_id":"r1"}"#, "\n",
            r#"{"timestamp":"2026-01-01T00:00:00.000000Z","level":"INFO","component":"orchestrator","message":"request accepted","request_id":"r1"}"#, "\n",
            "a panic message, not JSON\n",
            r#"{"timestamp":"2026-01-01T00:00:00.300000Z","level":"INFO","component":"orchestrator","message":"request accepted","request_id":"r2"}"#, "\n",
        ),
    )
    .expect("write");
    std::fs::write(
        &worker,
        concat!(
            r#"{"timestamp":"2026-01-01T00:00:00.010000Z","level":"INFO","component":"worker","message":"synthesis queued","request_id":"r1"}"#, "\n",
            r#"{"level":"INFO","component":"worker","message":"no timestamp"}"#, "\n",
        ),
    )
    .expect("write");
    let f = run(&everything(), &[orch, worker], false).expect("read");
    assert_eq!(
        column(&f, "message"),
        [
            "request accepted",
            "synthesis queued",
            "request accepted",
            "request finished"
        ]
    );
    assert_eq!(column(&f, "request_id"), ["r1", "r1", "r2", "r1"]);
    assert_eq!(
        column(&f, "component"),
        ["orchestrator", "worker", "orchestrator", "orchestrator"]
    );
    let offsets: Vec<f64> = f.detail["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|r| r["offset_ms"].as_f64().unwrap_or(-1.0))
        .collect();
    assert!((offsets[1] - 10.0).abs() < 1e-6, "{offsets:?}");
    assert!((offsets[3] - 500.0).abs() < 1e-6, "{offsets:?}");
    assert_eq!(f.detail["lines"], 4);
    assert_eq!(f.detail["skipped"], 2, "one non-JSON, one untimed line");
    assert_eq!(f.detail["counts"]["orchestrator"]["lines"], 3);
    assert_eq!(f.detail["counts"]["worker"]["lines"], 1);
    assert_eq!(f.status, Status::Ok);
    assert!(
        f.to_table().contains("3 lines, 0 errors"),
        "{}",
        f.to_table()
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn since_and_until_keep_only_their_range() {
    let d = dir("range");
    let log = d.join("orchestrator.log");
    let line = |t: &str, m: &str| {
        format!(
            r#"{{"timestamp":"{t}","level":"INFO","component":"orchestrator","message":"{m}"}}"#
        )
    };
    let text = [
        line("2026-01-01T00:40:00.000000Z", "too early"),
        line("2026-01-01T00:55:00.000000Z", "in range"),
        line("2026-01-01T00:59:30.000000Z", "too late"),
    ]
    .join("\n");
    std::fs::write(&log, text).expect("write");
    let now = at("2026-01-01T01:00:00Z");
    let since: When = "10m".parse().expect("a duration");
    let until: When = "1m".parse().expect("a duration");
    assert_eq!(since, When::Ago(Duration::from_secs(600)));
    let range = Range::resolve(since, Some(until), now);
    assert_eq!(range.since, at("2026-01-01T00:50:00Z"));
    let f = run(&range, std::slice::from_ref(&log), false).expect("read");
    assert_eq!(column(&f, "message"), ["in range"]);
    assert_eq!(f.detail["since"], "2026-01-01T00:50:00.000000Z");
    assert_eq!(f.detail["until"], "2026-01-01T00:59:00.000000Z");
    let absolute: When = "2026-01-01T00:59:30Z".parse().expect("a time");
    let f = run(&Range::resolve(absolute, None, now), &[log], false).expect("read");
    assert_eq!(column(&f, "message"), ["too late"], "both ends included");
    assert!("yesterday-ish".parse::<When>().is_err());
    let _ = std::fs::remove_dir_all(&d);
}

/// Lines as the services write them, and the mark each gets.
const MARKED: [(&str, Option<Mark>); 10] = [
    (
        r#"{"level":"WARN","component":"orchestrator","message":"worker circuit breaker changed state","worker":"http://w:1","breaker":"open"}"#,
        Some(Mark::Breaker),
    ),
    (
        r#"{"level":"INFO","component":"orchestrator","message":"4 requests in flight on this connection","code":"rate_limited","request_id":"r1"}"#,
        Some(Mark::Refused),
    ),
    (
        r#"{"level":"INFO","component":"orchestrator","message":"request refused: the worker is at capacity","retry_after_ms":40}"#,
        Some(Mark::Refused),
    ),
    (
        r#"{"level":"INFO","component":"worker","message":"draining: refusing new requests"}"#,
        Some(Mark::Refused),
    ),
    (
        r#"{"level":"WARN","component":"orchestrator","message":"the stream was cut","code":"worker_unavailable","elapsed_ms":12}"#,
        Some(Mark::Error),
    ),
    (
        r#"{"level":"INFO","component":"orchestrator","message":"the text is empty","code":"empty_text"}"#,
        Some(Mark::Error),
    ),
    (
        r#"{"level":"ERROR","component":"worker","message":"cannot load the voices","error":"no such file"}"#,
        Some(Mark::Error),
    ),
    (
        r#"{"level":"WARN","component":"worker","message":"synthesis failed","error":"onnx"}"#,
        Some(Mark::Error),
    ),
    (
        r#"{"level":"WARN","component":"worker","message":"fault injection started: this is an experiment, not an incident","fault_id":3,"kind":"dc_offset"}"#,
        Some(Mark::Fault),
    ),
    (
        r#"{"level":"INFO","component":"orchestrator","message":"closing the connection","code":1000,"reason":"idle"}"#,
        None,
    ),
];

#[test]
fn marks_follow_what_the_services_log() {
    for (line, expected) in MARKED {
        let v: Value = serde_json::from_str(line).expect("JSON");
        assert_eq!(mark(&v), expected, "{line}");
    }
    let plain = json!({"level": "INFO", "message": "request accepted"});
    assert_eq!(mark(&plain), None);
    let warning = json!({"level": "WARN", "message": "audio quality event", "event": "clipping"});
    assert_eq!(
        mark(&warning),
        None,
        "a warning without an error is not one"
    );
}

#[test]
fn marked_keeps_marked_lines_and_marks_decide_the_status() {
    let d = dir("marked");
    let log = d.join("all.log");
    let stamped: Vec<String> = MARKED
        .iter()
        .enumerate()
        .map(|(i, (line, _))| {
            let mut v: Value = serde_json::from_str(line).expect("JSON");
            v["timestamp"] = json!(format!("2026-01-01T00:00:0{i}.000000Z"));
            v.to_string()
        })
        .collect();
    std::fs::write(&log, stamped.join("\n")).expect("write");
    let f = run(&everything(), std::slice::from_ref(&log), true).expect("read");
    assert_eq!(f.status, Status::Warn, "errors and a breaker change");
    let marks = column(&f, "mark");
    assert_eq!(marks.len(), 9, "the unmarked close is left out: {marks:?}");
    assert_eq!(marks[0], "breaker");
    assert_eq!(f.detail["lines"], 10);
    let orch = &f.detail["counts"]["orchestrator"];
    assert_eq!(
        (
            &orch["lines"],
            &orch["errors"],
            &orch["refused"],
            &orch["breaker"]
        ),
        (&json!(6), &json!(2), &json!(2), &json!(1))
    );
    assert_eq!(f.detail["counts"]["worker"]["faults"], 1);
    assert!(
        column(&f, "message")[0].ends_with("(worker=http://w:1, breaker=open)"),
        "{:?}",
        column(&f, "message")
    );
    // Refusals alone are not worth a warning.
    std::fs::write(&log, &stamped[1]).expect("write");
    let f = run(&everything(), &[log], false).expect("read");
    assert_eq!(f.status, Status::Ok);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn an_empty_range_is_said_in_a_sentence_naming_the_files() {
    let d = dir("empty");
    let (a, b) = (d.join("orchestrator.log"), d.join("worker.log"));
    std::fs::write(
        &a,
        r#"{"timestamp":"2026-01-01T00:00:00.000000Z","level":"INFO","component":"orchestrator","message":"x"}"#,
    )
    .expect("write");
    std::fs::write(&b, "").expect("write");
    let range = Range {
        since: at("2027-01-01T00:00:00Z"),
        until: None,
    };
    let f = run(&range, &[a.clone(), b.clone()], false).expect("read");
    assert_eq!(f.rows.len(), 1, "one sentence, not a table");
    let sentence = &f.rows[0][0];
    assert!(
        sentence.starts_with("No log line falls between 2027-01-01"),
        "{sentence}"
    );
    assert!(
        sentence.contains(&format!(
            "{} (1 lines, 2026-01-01T00:00:00.000000Z",
            a.display()
        )),
        "{sentence}"
    );
    assert!(
        sentence.contains(&format!("{} (0 lines", b.display())),
        "{sentence}"
    );
    assert_eq!(f.detail["lines"], 0);
    assert_eq!(f.detail["note"].as_str(), Some(sentence.as_str()));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_file_that_cannot_be_read_is_an_error_naming_it() {
    let missing = dir("missing").join("no-such.log");
    let e = run(&everything(), std::slice::from_ref(&missing), false).expect_err("missing file");
    assert!(
        e.to_string().contains(&missing.display().to_string()),
        "{e}"
    );
}
