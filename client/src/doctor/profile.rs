//! `doctor profile`: takes a CPU profile of the orchestrator, of every
//! worker the orchestrator's `/info` lists, or of both, all at once, and
//! saves each as a flamegraph (`svg`) or pprof protobuf (`pb`). The
//! processes must run with `--allow-profiling` and the same
//! `--admin-token`; each serves one profile at a time, for 1 to 60 s.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tts_telemetry::profile::{Format, PATH};

use super::health::error_text;
use super::{Findings, Status};

/// Which processes to profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// The orchestrator (in `tts-pipeline`: the whole process).
    Orchestrator,
    /// Every worker the orchestrator lists.
    Worker,
    /// The orchestrator and every worker.
    All,
}

/// What to profile, for how long, and where to save it.
#[derive(Debug, Clone)]
pub struct Options {
    /// The orchestrator's admin base URL: the workers are found from it.
    pub orchestrator: String,
    /// Which processes.
    pub target: Target,
    /// How long each profile samples, seconds (1 to 60).
    pub seconds: u64,
    /// Flamegraph or protobuf.
    pub format: Format,
    /// The file to write (one process), or the stem the others' names are
    /// made from (`FILE` with `-<process>-<host>_<port>` before its
    /// extension); `None`: `profile-<process>-<host>_<port>.<svg|pb>` in
    /// the current directory.
    pub out: Option<PathBuf>,
    /// The processes' admin token.
    pub token: Option<String>,
}

/// One process to profile.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Process {
    /// `orchestrator` or `worker`.
    kind: &'static str,
    /// Its admin or metrics base URL.
    base: String,
}

/// Profiles every process `options` names, concurrently.
pub async fn run(options: &Options) -> Findings {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(options.seconds + 15))
        .build()
        .unwrap_or_default();
    let base = options.orchestrator.trim_end_matches('/').to_owned();
    let mut rows = Vec::new();
    let mut processes = Vec::new();
    if options.target != Target::Worker {
        processes.push(Process {
            kind: "orchestrator",
            base: base.clone(),
        });
    }
    if options.target != Target::Orchestrator {
        match workers(&http, &base).await {
            Ok(found) if found.is_empty() => rows.push(failed(
                "worker",
                &base,
                "the orchestrator's /info lists no worker".into(),
            )),
            Ok(found) => processes.extend(found),
            Err(e) => rows.push(failed("worker", &base, e)),
        }
    }
    let processes = distinct(processes);
    let several = processes.len() > 1;
    let taken = processes.iter().map(|p| {
        let file = file_name(options.out.as_deref(), several, p, options.format);
        take(&http, p, options, file)
    });
    rows.extend(futures::future::join_all(taken).await);
    findings(rows)
}

/// The workers' metrics base URLs, from the orchestrator's `/info`.
async fn workers(http: &reqwest::Client, base: &str) -> Result<Vec<Process>, String> {
    let url = format!("{base}/info");
    let text = http
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("{url}: {}", error_text(&e)))?
        .text()
        .await
        .map_err(|e| format!("{url}: {}", error_text(&e)))?;
    let info: Value = serde_json::from_str(&text).map_err(|e| format!("{url}: {e}"))?;
    Ok(info["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["metrics_url"].as_str().filter(|u| !u.is_empty()))
        .map(|u| Process {
            kind: "worker",
            base: metrics_base(u),
        })
        .collect())
}

/// `http://host:port/metrics` → `http://host:port`.
fn metrics_base(url: &str) -> String {
    url.trim_end_matches('/')
        .trim_end_matches("/metrics")
        .to_owned()
}

/// Each listener once: in `tts-pipeline` the worker's metrics are the
/// orchestrator's admin listener, and one process profiles once at a time.
fn distinct(processes: Vec<Process>) -> Vec<Process> {
    let mut seen = Vec::new();
    processes
        .into_iter()
        .filter(|p| {
            let new = !seen.contains(&p.base);
            seen.push(p.base.clone());
            new
        })
        .collect()
}

/// `host_port` of a base URL, for a file name.
fn host_port(base: &str) -> String {
    let authority = base.split_once("://").map_or(base, |(_, rest)| rest);
    let authority = authority.split('/').next().unwrap_or(authority);
    authority
        .chars()
        .filter(|c| !matches!(c, '[' | ']'))
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Where `process`'s profile goes (see [`Options::out`]).
fn file_name(out: Option<&Path>, several: bool, process: &Process, format: Format) -> PathBuf {
    let label = format!("{}-{}", process.kind, host_port(&process.base));
    match out {
        None => PathBuf::from(format!("profile-{label}.{}", format.as_str())),
        Some(path) if !several => path.to_owned(),
        Some(path) => {
            let stem = path.file_stem().map_or_else(
                || "profile".to_owned(),
                |s| s.to_string_lossy().into_owned(),
            );
            let extension = path.extension().map_or_else(
                || format.as_str().to_owned(),
                |e| e.to_string_lossy().into_owned(),
            );
            path.with_file_name(format!("{stem}-{label}.{extension}"))
        }
    }
}

/// Takes one process's profile and writes it to `file`.
async fn take(http: &reqwest::Client, process: &Process, options: &Options, file: PathBuf) -> Row {
    let url = format!(
        "{}{PATH}?seconds={}&format={}",
        process.base,
        options.seconds,
        options.format.as_str()
    );
    let request = match &options.token {
        Some(t) => http.get(&url).bearer_auth(t),
        None => http.get(&url),
    };
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            return failed(
                process.kind,
                &process.base,
                format!("{url}: {}", error_text(&e)),
            );
        }
    };
    let code = response.status().as_u16();
    let body = match response.bytes().await {
        Ok(b) => b,
        Err(e) => {
            return failed(
                process.kind,
                &process.base,
                format!("{url}: {}", error_text(&e)),
            );
        }
    };
    if code != 200 {
        return failed(process.kind, &process.base, refusal(&url, code, &body));
    }
    match tokio::fs::write(&file, &body).await {
        Ok(()) => Row {
            process: process.kind,
            url: process.base.clone(),
            status: Status::Ok,
            detail: format!("wrote {} ({} bytes)", file.display(), body.len()),
            file: Some((file, body.len())),
        },
        Err(e) => failed(
            process.kind,
            &process.base,
            format!("writing {}: {e}", file.display()),
        ),
    }
}

/// A sentence for a refused profile: what went wrong and what to do.
fn refusal(url: &str, code: u16, body: &[u8]) -> String {
    let reason = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "no reason given".into());
    match code {
        401 => format!(
            "{url}: 401 unauthorized: pass the process's token with --admin-token (or TTS_ADMIN_TOKEN)"
        ),
        404 => {
            format!("{url}: 404, the process needs --allow-profiling (and --admin-token): {reason}")
        }
        429 => format!(
            "{url}: 429, another profile is running in that process; try again when it ends"
        ),
        other => format!("{url}: HTTP {other}: {reason}"),
    }
}

struct Row {
    process: &'static str,
    /// The process's listener (a failure's detail names the full URL).
    url: String,
    status: Status,
    detail: String,
    /// The file written and its size, bytes.
    file: Option<(PathBuf, usize)>,
}

fn failed(process: &'static str, url: &str, detail: String) -> Row {
    Row {
        process,
        url: url.to_owned(),
        status: Status::Fail,
        detail,
        file: None,
    }
}

fn findings(rows: Vec<Row>) -> Findings {
    let status = if rows.is_empty() || rows.iter().any(|r| r.status == Status::Fail) {
        Status::Fail
    } else {
        Status::Ok
    };
    let detail = json!({
        "status": status,
        "profiles": rows.iter().map(|r| json!({
            "process": r.process,
            "url": r.url,
            "status": r.status,
            "detail": r.detail,
            "file": r.file.as_ref().map(|(f, _)| f.display().to_string()),
            "bytes": r.file.as_ref().map(|(_, n)| n),
        })).collect::<Vec<_>>(),
    });
    Findings {
        columns: ["process", "url", "status", "detail"]
            .map(String::from)
            .to_vec(),
        rows: rows
            .into_iter()
            .map(|r| {
                vec![
                    r.process.to_owned(),
                    r.url,
                    r.status.as_str().to_owned(),
                    r.detail,
                ]
            })
            .collect(),
        status,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(kind: &'static str, base: &str) -> Process {
        Process {
            kind,
            base: base.into(),
        }
    }

    #[test]
    fn files_are_named_after_the_process_and_its_listener() {
        let worker = process("worker", "http://127.0.0.1:9091");
        assert_eq!(
            file_name(None, true, &worker, Format::Svg),
            PathBuf::from("profile-worker-127.0.0.1_9091.svg")
        );
        let v6 = process("orchestrator", "http://[::1]:8081/");
        assert_eq!(
            file_name(None, false, &v6, Format::Pb),
            PathBuf::from("profile-orchestrator-__1_8081.pb")
        );
        let out = Path::new("/tmp/cpu.svg");
        assert_eq!(file_name(Some(out), false, &worker, Format::Svg), out);
        assert_eq!(
            file_name(Some(out), true, &worker, Format::Svg),
            PathBuf::from("/tmp/cpu-worker-127.0.0.1_9091.svg")
        );
        assert_eq!(
            file_name(Some(Path::new("cpu")), true, &worker, Format::Pb),
            PathBuf::from("cpu-worker-127.0.0.1_9091.pb")
        );
    }

    #[test]
    fn a_listener_shared_by_both_halves_is_profiled_once() {
        let pipeline = distinct(vec![
            process("orchestrator", "http://127.0.0.1:8081"),
            process("worker", &metrics_base("http://127.0.0.1:8081/metrics")),
            process("worker", "http://127.0.0.1:9091"),
        ]);
        assert_eq!(
            pipeline,
            vec![
                process("orchestrator", "http://127.0.0.1:8081"),
                process("worker", "http://127.0.0.1:9091"),
            ]
        );
    }

    #[test]
    fn each_refusal_says_what_to_do() {
        let url = "http://w/debug/pprof/profile";
        assert!(refusal(url, 401, b"").contains("--admin-token"));
        let off = br#"{"error":"profiling is off: start the process with --allow-profiling"}"#;
        let text = refusal(url, 404, off);
        assert!(
            text.starts_with(url) && text.contains("--allow-profiling"),
            "{text}"
        );
        assert!(refusal(url, 429, b"").contains("another profile is running"));
        let bad = br#"{"error":"seconds must be a whole number from 1 to 60, not \"0\""}"#;
        assert!(refusal(url, 400, bad).contains("HTTP 400: seconds must be"));
    }

    #[test]
    fn nothing_profiled_is_a_failure() {
        assert_eq!(findings(Vec::new()).status, Status::Fail);
        let ok = Row {
            process: "worker",
            url: "u".into(),
            status: Status::Ok,
            detail: "wrote f".into(),
            file: Some((PathBuf::from("f"), 10)),
        };
        let f = findings(vec![ok]);
        assert_eq!(f.status, Status::Ok);
        assert_eq!(f.detail["profiles"][0]["bytes"], 10);
        assert_eq!(f.detail["profiles"][0]["file"], "f");
    }
}
