//! The timeline as a table and as JSON.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::{Value, json};

use super::{Counts, FileSummary, Mark, Range, Row, Timed, component, text};
use crate::doctor::{Findings, Status};

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

pub(super) fn row(l: &Timed<'_>, first: SystemTime) -> Row {
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

pub(super) fn findings(
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
pub(super) fn nothing_in_range(range: &Range, files: &[FileSummary]) -> Findings {
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
