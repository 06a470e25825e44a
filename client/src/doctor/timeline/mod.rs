//! `doctor timeline`: every log line of every request in a time range,
//! merged from the services' JSON logs (one object per line, see
//! `telemetry/src/logging.rs`) into one timeline sorted by time, with the
//! lines an incident is made of marked. `doctor trace` follows one trace;
//! this shows all of them.
//!
//! Lines are marked by the rules of [`mark()`]: faults, breaker changes,
//! refusals and errors.

mod mark;
mod range;
mod render;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;

use super::Findings;
use super::trace::{LogFile, ReadError, read_log};
use render::{findings, nothing_in_range, row};

pub use mark::{Mark, mark};
pub use range::{Range, When, WhenError};

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
