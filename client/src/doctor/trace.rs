//! `doctor trace`: one request's timeline across processes, from their JSON
//! logs. Lines with the trace id are kept, and so are lines that carry a
//! request id seen on those lines.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Value, json};

use super::{Findings, Status};

/// One log line of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// When, RFC 3339.
    pub timestamp: String,
    /// Milliseconds since the first step.
    pub offset_ms: f64,
    /// Milliseconds since the previous step.
    pub delta_ms: f64,
    /// `worker`, `orchestrator`, …
    pub component: String,
    /// The log message.
    pub message: String,
    /// The request the line is about.
    pub request_id: String,
    /// The file it came from.
    pub file: String,
    /// The whole line.
    pub line: Value,
}

/// A log file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading {path}: {source}")]
pub struct ReadError {
    path: String,
    source: std::io::Error,
}

/// One JSON log file as read (shared with `doctor timeline`).
#[derive(Debug, Clone)]
pub struct LogFile {
    /// The path, as given.
    pub path: String,
    /// The lines that are JSON objects, in file order.
    pub lines: Vec<Value>,
    /// Non-blank lines that are not JSON objects (skipped).
    pub skipped: usize,
}

/// Reads `path` and keeps its lines that are JSON objects.
pub fn read_log(path: &Path) -> Result<LogFile, ReadError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReadError {
        path: path.display().to_string(),
        source,
    })?;
    let mut file = LogFile {
        path: path.display().to_string(),
        lines: Vec::new(),
        skipped: 0,
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Value>(line) {
            Ok(v) if v.is_object() => file.lines.push(v),
            _ => file.skipped += 1,
        }
    }
    Ok(file)
}

/// Builds the timeline of `trace_id` from `logs`.
pub fn run(trace_id: &str, logs: &[PathBuf]) -> Result<Findings, ReadError> {
    let mut lines = Vec::new();
    for path in logs {
        let LogFile {
            path, lines: read, ..
        } = read_log(path)?;
        lines.extend(read.into_iter().map(|v| (path.clone(), v)));
    }
    let requests: HashSet<String> = lines
        .iter()
        .filter(|(_, v)| v["trace_id"] == trace_id)
        .map(|(_, v)| field(v, "request_id"))
        .filter(|r| !r.is_empty())
        .collect();
    let mut picked: Vec<(SystemTime, String, Value)> = lines
        .into_iter()
        .filter(|(_, v)| v["trace_id"] == trace_id || requests.contains(&field(v, "request_id")))
        .filter_map(|(file, v)| {
            let at = humantime::parse_rfc3339_weak(v["timestamp"].as_str()?).ok()?;
            Some((at, file, v))
        })
        .collect();
    picked.sort_by_key(|(at, _, _)| *at);
    let mut found = findings(trace_id, requests, steps(picked));
    if found.rows.is_empty() {
        // Say why the table is empty, rather than leave it to the reader.
        let why = format!(
            "no line of the {} log file(s) read carries trace id {trace_id} (or a request of it)",
            logs.len()
        );
        found.rows.push(vec![
            String::new(),
            String::new(),
            String::new(),
            why.clone(),
            String::new(),
        ]);
        found.detail["message"] = json!(why);
    }
    Ok(found)
}

fn field(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_owned()
}

/// The lines, sorted by time, as steps timed from the first and from the
/// one before.
fn steps(picked: Vec<(SystemTime, String, Value)>) -> Vec<Step> {
    let first = picked.first().map(|(at, _, _)| *at);
    let mut previous = first;
    picked
        .into_iter()
        .map(|(at, file, v)| {
            let since = |t: Option<SystemTime>| {
                t.and_then(|t| at.duration_since(t).ok())
                    .map_or(0.0, |d| d.as_secs_f64() * 1e3)
            };
            let step = Step {
                timestamp: field(&v, "timestamp"),
                offset_ms: since(first),
                delta_ms: since(previous),
                component: field(&v, "component"),
                message: field(&v, "message"),
                request_id: field(&v, "request_id"),
                file,
                line: v,
            };
            previous = Some(at);
            step
        })
        .collect()
}

/// The table and its JSON; `Fail` when no line has the trace.
fn findings(trace_id: &str, requests: HashSet<String>, steps: Vec<Step>) -> Findings {
    let components: HashSet<&str> = steps.iter().map(|s| s.component.as_str()).collect();
    let status = if steps.is_empty() {
        Status::Fail
    } else {
        Status::Ok
    };
    let rows = steps
        .iter()
        .map(|s| {
            vec![
                format!("{:+.3}", s.offset_ms),
                format!("{:+.3}", s.delta_ms),
                s.component.clone(),
                s.message.clone(),
                s.request_id.clone(),
            ]
        })
        .collect();
    Findings {
        columns: ["at ms", "step ms", "component", "message", "request"]
            .map(String::from)
            .to_vec(),
        rows,
        status,
        detail: json!({
            "trace_id": trace_id,
            "status": status,
            "components": components.into_iter().collect::<Vec<_>>(),
            "requests": requests.into_iter().collect::<Vec<_>>(),
            "steps": steps,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_orders_lines_from_several_files() {
        let dir = std::env::temp_dir().join(format!("tts-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let a = dir.join("orchestrator.log");
        let b = dir.join("worker.log");
        std::fs::write(
            &a,
            concat!(
                r#"{"timestamp":"2026-01-01T00:00:00.000000Z","component":"orchestrator","message":"request accepted","trace_id":"t1","request_id":"r1"}"#, "\n",
                r#"{"timestamp":"2026-01-01T00:00:00.500000Z","component":"orchestrator","message":"request finished","trace_id":"t1","request_id":"r1"}"#, "\n",
                r#"{"timestamp":"2026-01-01T00:00:00.100000Z","component":"orchestrator","message":"other","trace_id":"t2","request_id":"r2"}"#, "\n",
                "not json\n",
            ),
        )
        .expect("write");
        std::fs::write(
            &b,
            concat!(
                r#"{"timestamp":"2026-01-01T00:00:00.010000Z","component":"worker","message":"synthesis queued","request_id":"r1"}"#, "\n",
            ),
        )
        .expect("write");
        let f = run("t1", &[a, b]).expect("read");
        assert_eq!(f.status, Status::Ok);
        let steps = f.detail["steps"].as_array().expect("steps");
        let messages: Vec<&str> = steps
            .iter()
            .map(|s| s["message"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(
            messages,
            ["request accepted", "synthesis queued", "request finished"]
        );
        assert!((steps[1]["offset_ms"].as_f64().unwrap_or(0.0) - 10.0).abs() < 0.01);
        assert!((steps[2]["delta_ms"].as_f64().unwrap_or(0.0) - 490.0).abs() < 0.01);
        let missing = run("nope", &[dir.join("worker.log")]).expect("read");
        assert_eq!(missing.status, Status::Fail);
        assert!(
            missing.rows[0][3]
                .starts_with("no line of the 1 log file(s) read carries trace id nope"),
            "{:?}",
            missing.rows
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
