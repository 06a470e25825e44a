//! `doctor timeline`: every log line of every request in a time range,
//! merged from the services' JSON logs (one object per line, see
//! `telemetry/src/logging.rs`) into one timeline sorted by time, with the
//! lines an incident is made of marked. `doctor trace` follows one trace;
//! this shows all of them.
//!
//! # Marks
//!
//! Matched on what the services really log (`orchestrator/src`,
//! `worker/src`); the first rule that applies wins:
//!
//! 1. `fault`: a `fault` or `fault_id` field, or "fault" in the message:
//!    the fault-injection lines of `telemetry/src/faults.rs` ("fault
//!    injection started: this is an experiment, not an incident", "fault
//!    injection ended"; `fault_id`, `kind`), from either service.
//! 2. `breaker`: a `breaker` field or "circuit breaker" in the message: the
//!    orchestrator's "worker circuit breaker changed state" (`worker`,
//!    `breaker` = `closed`, `open`, `half_open`).
//! 3. `refused`: `code` is `overloaded` or `rate_limited`: the
//!    orchestrator's "request refused" (connection, address and process
//!    limits) and "http request refused".
//! 4. `error`: any other wire error code in `code`: the orchestrator's
//!    "request failed", "request ended by the client's doing", "context
//!    failed", "request refused" and "http request refused" for bad input;
//!    the worker's "request rejected".
//! 5. `error`: level ERROR (the worker's "cannot load the voices").
//! 6. `refused`: "refus" in the message, or a `retry_after_ms` field: the
//!    orchestrator's "request refused: the worker is at capacity" and
//!    "handshake refused"; the worker's "request refused: admitted streams
//!    would be late" and "draining: refusing new requests".
//! 7. `error`: level WARN with an `error` field: the worker's "synthesis
//!    failed", "voice not loaded; the others serve", "cannot renew the
//!    registry entry; …"; the orchestrator's "cannot encode the requested
//!    format", "cannot read the worker registry; …", "registry entry
//!    ignored", "accept failed".
//!
//! Why `code` comes before the message text: a line's words can be
//! generic ("request failed") while its code says what happened; the
//! details travel in a `detail` field.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::{Value, json};
use tts_protocol::ErrorCode;

use super::trace::{LogFile, ReadError, read_log};
use super::{Findings, Status};

/// Fields shown after the message, in this order, when a line has them.
const SALIENT: [&str; 8] = [
    "code",
    "detail",
    "reason",
    "error",
    "worker",
    "breaker",
    "kind",
    "retry_after_ms",
];

/// A time on the command line: an RFC 3339 time, or a duration before now
/// (`10m`, `90s`, `2h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// This time.
    At(SystemTime),
    /// This long before now.
    Ago(Duration),
}

/// A `--since` or `--until` value that is neither form.
#[derive(Debug, thiserror::Error)]
#[error(
    "{value:?} is neither an RFC 3339 time (2026-01-01T12:00:00Z) nor a duration before now (10m, 90s, 2h)"
)]
pub struct WhenError {
    value: String,
}

impl FromStr for When {
    type Err = WhenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(at) = humantime::parse_rfc3339_weak(s) {
            return Ok(Self::At(at));
        }
        humantime::parse_duration(s)
            .map(Self::Ago)
            .map_err(|_| WhenError {
                value: s.to_owned(),
            })
    }
}

impl When {
    /// The time this stands for, `now` being now.
    pub fn resolve(self, now: SystemTime) -> SystemTime {
        match self {
            Self::At(at) => at,
            Self::Ago(d) => now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH),
        }
    }
}

/// The times whose lines are kept, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The first time kept.
    pub since: SystemTime,
    /// The last time kept; `None`: to the end of the logs.
    pub until: Option<SystemTime>,
}

impl Range {
    /// `since` and `until` resolved against `now`.
    pub fn resolve(since: When, until: Option<When>, now: SystemTime) -> Self {
        Self {
            since: since.resolve(now),
            until: until.map(|u| u.resolve(now)),
        }
    }

    fn contains(&self, at: SystemTime) -> bool {
        at >= self.since && self.until.is_none_or(|u| at <= u)
    }
}

/// What kind of incident line a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mark {
    /// A failure: level ERROR, an error code, or a warning with an error.
    Error,
    /// An admission refusal: overloaded, rate limited, at capacity.
    Refused,
    /// A circuit breaker changed state.
    Breaker,
    /// An injected fault.
    Fault,
}

impl Mark {
    /// The word printed in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Refused => "refused",
            Self::Breaker => "breaker",
            Self::Fault => "fault",
        }
    }
}

/// The mark `line` deserves, if any (the rules in the module's doc).
pub fn mark(line: &Value) -> Option<Mark> {
    let message = line["message"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let level = line["level"].as_str().unwrap_or_default();
    let has = |field: &str| line.get(field).is_some_and(|v| !v.is_null());
    if has("fault") || has("fault_id") || message.contains("fault") {
        return Some(Mark::Fault);
    }
    if has("breaker") || message.contains("circuit breaker") {
        return Some(Mark::Breaker);
    }
    match line["code"].as_str().and_then(ErrorCode::from_wire) {
        Some(ErrorCode::Overloaded | ErrorCode::RateLimited) => return Some(Mark::Refused),
        Some(_) => return Some(Mark::Error),
        None => {}
    }
    if level.eq_ignore_ascii_case("error") {
        Some(Mark::Error)
    } else if message.contains("refus") || has("retry_after_ms") {
        Some(Mark::Refused)
    } else if level.eq_ignore_ascii_case("warn") && has("error") {
        Some(Mark::Error)
    } else {
        None
    }
}

/// One line of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// When, RFC 3339, as logged.
    pub timestamp: String,
    /// Milliseconds since the range's first line (with `--marked`, shown
    /// or not, so offsets read the same either way).
    pub offset_ms: f64,
    /// `worker`, `orchestrator`, …
    pub component: String,
    /// `ERROR`, `WARN`, `INFO`, …
    pub level: String,
    /// What kind of incident line it is, if any.
    pub mark: Option<Mark>,
    /// The request it is about (empty if none).
    pub request_id: String,
    /// The message and its salient fields (`code`, `reason`, `error`,
    /// `worker`, …).
    pub message: String,
    /// The file it came from.
    pub file: String,
    /// The whole line.
    pub line: Value,
}

/// Lines and marks of one component in the range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Lines in the range.
    pub lines: usize,
    /// `error` marks.
    pub errors: usize,
    /// `refused` marks.
    pub refused: usize,
    /// `breaker` marks.
    pub breaker: usize,
    /// `fault` marks.
    pub faults: usize,
}

impl Counts {
    fn add(&mut self, mark: Option<Mark>) {
        self.lines += 1;
        match mark {
            Some(Mark::Error) => self.errors += 1,
            Some(Mark::Refused) => self.refused += 1,
            Some(Mark::Breaker) => self.breaker += 1,
            Some(Mark::Fault) => self.faults += 1,
            None => {}
        }
    }
}

/// What was read from one file.
#[derive(Debug, Clone, Serialize)]
struct FileSummary {
    path: String,
    /// JSON lines with a timestamp.
    lines: usize,
    /// Lines that are not JSON objects or have no timestamp.
    skipped: usize,
    first: Option<String>,
    last: Option<String>,
}

/// A log line placed in time.
struct Timed<'a> {
    at: SystemTime,
    file: &'a str,
    line: &'a Value,
    mark: Option<Mark>,
}

/// Builds the timeline of `range` from `logs`; `marked_only` keeps only
/// marked lines (the counts still cover every line in the range).
pub fn run(range: &Range, logs: &[PathBuf], marked_only: bool) -> Result<Findings, ReadError> {
    let files = logs
        .iter()
        .map(|p| read_log(p))
        .collect::<Result<Vec<_>, _>>()?;
    let (mut lines, summaries) = place(&files);
    lines.retain(|l| range.contains(l.at));
    // Stable: lines of the same microsecond keep their file order.
    lines.sort_by_key(|l| l.at);
    if lines.is_empty() {
        return Ok(nothing_in_range(range, &summaries));
    }
    let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
    for l in &lines {
        counts.entry(component(l.line)).or_default().add(l.mark);
    }
    let total = lines.len();
    let first = lines[0].at;
    let rows: Vec<Row> = lines
        .into_iter()
        .filter(|l| !marked_only || l.mark.is_some())
        .map(|l| row(&l, first))
        .collect();
    Ok(findings(range, total, &rows, &counts, &summaries))
}

/// Every file's lines with a timestamp, and what each file held.
fn place(files: &[LogFile]) -> (Vec<Timed<'_>>, Vec<FileSummary>) {
    let mut lines = Vec::new();
    let mut summaries = Vec::new();
    for f in files {
        let before = lines.len();
        lines.extend(f.lines.iter().filter_map(|line| {
            let at = humantime::parse_rfc3339_weak(line["timestamp"].as_str()?).ok()?;
            Some(Timed {
                at,
                file: &f.path,
                line,
                mark: mark(line),
            })
        }));
        let placed = &lines[before..];
        let stamp = |t: Option<&Timed<'_>>| t.map(|t| text(t.line, "timestamp"));
        summaries.push(FileSummary {
            path: f.path.clone(),
            lines: placed.len(),
            skipped: f.skipped + f.lines.len() - placed.len(),
            first: stamp(placed.iter().min_by_key(|t| t.at)),
            last: stamp(placed.iter().max_by_key(|t| t.at)),
        });
    }
    (lines, summaries)
}

fn text(line: &Value, field: &str) -> String {
    line[field].as_str().unwrap_or_default().to_owned()
}

fn component(line: &Value) -> String {
    line["component"].as_str().unwrap_or("unknown").to_owned()
}

fn row(l: &Timed<'_>, first: SystemTime) -> Row {
    let offset = l.at.duration_since(first).unwrap_or_default();
    Row {
        timestamp: text(l.line, "timestamp"),
        offset_ms: offset.as_secs_f64() * 1e3,
        component: component(l.line),
        level: text(l.line, "level"),
        mark: l.mark,
        request_id: text(l.line, "request_id"),
        message: with_salient_fields(l.line),
        file: l.file.to_owned(),
        line: l.line.clone(),
    }
}

/// `message (code=…, worker=…)`, with the fields the line has.
fn with_salient_fields(line: &Value) -> String {
    let fields: Vec<String> = SALIENT
        .iter()
        .filter_map(|&k| match &line[k] {
            Value::Null => None,
            Value::String(s) => Some(format!("{k}={s}")),
            other => Some(format!("{k}={other}")),
        })
        .collect();
    let message = text(line, "message");
    if fields.is_empty() {
        message
    } else {
        format!("{message} ({})", fields.join(", "))
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

fn findings(
    range: &Range,
    total: usize,
    rows: &[Row],
    counts: &BTreeMap<String, Counts>,
    files: &[FileSummary],
) -> Findings {
    let worrying = counts.values().any(|c| c.errors + c.breaker > 0);
    let status = if worrying { Status::Warn } else { Status::Ok };
    let skipped: usize = files.iter().map(|f| f.skipped).sum();
    let mut table: Vec<Vec<String>> = rows.iter().map(table_row).collect();
    table.extend(summary_rows(counts, skipped));
    Findings {
        columns: [
            "time",
            "+s",
            "component",
            "level",
            "mark",
            "request",
            "message",
        ]
        .map(String::from)
        .to_vec(),
        rows: table,
        status,
        detail: json!({
            "since": rfc3339(range.since),
            "until": range.until.map(rfc3339),
            "status": status,
            "lines": total,
            "skipped": skipped,
            "files": files,
            "counts": counts,
            "timeline": rows,
        }),
    }
}

/// A summary row per component, and one for skipped lines if any.
fn summary_rows(counts: &BTreeMap<String, Counts>, skipped: usize) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = counts
        .iter()
        .map(|(component, c)| {
            let summary = format!(
                "{} lines, {} errors, {} refused, {} breaker changes, {} faults",
                c.lines, c.errors, c.refused, c.breaker, c.faults
            );
            summary_row(component, "summary", summary)
        })
        .collect();
    if skipped > 0 {
        let note = format!("{skipped} lines not JSON or without a timestamp");
        rows.push(summary_row("", "skipped", note));
    }
    rows
}

fn table_row(r: &Row) -> Vec<String> {
    vec![
        r.timestamp.clone(),
        format!("+{:.3}", r.offset_ms / 1e3),
        r.component.clone(),
        r.level.clone(),
        r.mark.map(Mark::as_str).unwrap_or_default().to_owned(),
        r.request_id.clone(),
        r.message.clone(),
    ]
}

fn summary_row(component: &str, what: &str, text: String) -> Vec<String> {
    let blank = String::new;
    vec![
        blank(),
        blank(),
        component.to_owned(),
        blank(),
        what.to_owned(),
        blank(),
        text,
    ]
}

/// One sentence instead of an empty table: the range, and what each file
/// held (so a wrong `--since` or a wrong file shows).
fn nothing_in_range(range: &Range, files: &[FileSummary]) -> Findings {
    let until = range.until.map_or_else(|| "the end".to_owned(), rfc3339);
    let read: Vec<String> = files
        .iter()
        .map(|f| {
            let span = match (&f.first, &f.last) {
                (Some(a), Some(b)) => format!(", {a} to {b}"),
                _ => String::new(),
            };
            format!(
                "{} ({} lines{span}, {} skipped)",
                f.path, f.lines, f.skipped
            )
        })
        .collect();
    let sentence = format!(
        "No log line falls between {} and {until}; read {} file(s): {}.",
        rfc3339(range.since),
        files.len(),
        read.join("; ")
    );
    Findings {
        columns: vec!["timeline".to_owned()],
        rows: vec![vec![sentence.clone()]],
        status: Status::Ok,
        detail: json!({
            "since": rfc3339(range.since),
            "until": range.until.map(rfc3339),
            "status": Status::Ok,
            "lines": 0,
            "note": sentence,
            "files": files,
            "counts": {},
            "timeline": [],
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let warning =
            json!({"level": "WARN", "message": "audio quality event", "event": "clipping"});
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
        let e =
            run(&everything(), std::slice::from_ref(&missing), false).expect_err("missing file");
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );
    }
}
