//! `doctor chaos`: starts, lists and stops injected faults (chaos
//! experiments) on every process that applies them, found through the
//! orchestrator's `/info`: `link_latency` on the orchestrator, the other
//! kinds on each worker (or the one `--worker` names). The processes must
//! run with `--allow-fault-injection` and the same `--admin-token`.

use std::time::Duration;

use serde_json::{Value, json};
use tts_telemetry::faults::{Component, FaultRequest, KINDS};

use super::health::error_text;
use super::{Findings, Status};

/// Where the faults go.
#[derive(Debug, Clone)]
pub struct Targets {
    /// The orchestrator's admin base URL.
    pub orchestrator: String,
    /// One worker's metrics URL (`…/metrics` or its base); `None`: every
    /// worker the orchestrator lists.
    pub worker: Option<String>,
    /// The admin token.
    pub token: Option<String>,
}

/// A fault's parameters as the command line gives them.
#[derive(Debug, Clone, Default)]
pub struct Params {
    /// `link_latency`: added delay, ms.
    pub latency_ms: Option<u32>,
    /// `link_latency`: jitter, ms.
    pub jitter_ms: Option<u32>,
    /// `corrupt_frames`, `drop_frames`: every n-th frame.
    pub every: Option<u32>,
    /// `slowdown`: the factor.
    pub factor: Option<f64>,
    /// `clipping`, `dead_air`: start, ms into each request.
    pub from_ms: Option<u32>,
    /// `clipping`, `dead_air`: length, ms.
    pub len_ms: Option<u32>,
    /// `dc_offset`: the offset.
    pub offset: Option<i16>,
}

/// A fault the command line describes badly.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadFault(String);

/// The request a kind, its parameters and a duration make, checked here
/// before anything is sent.
pub fn request(kind: &str, params: &Params, duration_s: f64) -> Result<FaultRequest, BadFault> {
    if !KINDS.contains(&kind) {
        return Err(BadFault(format!(
            "unknown fault kind {kind:?}; one of {}",
            KINDS.join(", ")
        )));
    }
    let mut body = json!({"kind": kind, "duration_s": duration_s});
    let fields: [(&str, Option<Value>); 7] = [
        ("latency_ms", params.latency_ms.map(Value::from)),
        ("jitter_ms", params.jitter_ms.map(Value::from)),
        ("every", params.every.map(Value::from)),
        ("factor", params.factor.map(Value::from)),
        ("from_ms", params.from_ms.map(Value::from)),
        ("len_ms", params.len_ms.map(Value::from)),
        ("offset", params.offset.map(Value::from)),
    ];
    if let Some(map) = body.as_object_mut() {
        map.extend(
            fields
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_owned(), v?))),
        );
    }
    let request: FaultRequest =
        serde_json::from_value(body).map_err(|e| BadFault(format!("{kind}: {e}")))?;
    request
        .fault
        .validate()
        .map_err(|e| BadFault(format!("{kind}: {e}")))?;
    if !(request.duration_s > 0.0 && request.duration_s <= tts_telemetry::faults::MAX_DURATION_SECS)
    {
        return Err(BadFault(
            "--duration must be above 0 and at most 3600 s".into(),
        ));
    }
    Ok(request)
}

/// What to do.
#[derive(Debug, Clone)]
pub enum Action {
    /// Start this fault.
    Start(FaultRequest),
    /// List the active faults.
    List,
    /// Stop the faults of this kind, or all.
    Stop(Option<String>),
}

/// Does `action` on every process concerned.
pub async fn run(targets: &Targets, action: &Action) -> Findings {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let base = targets.orchestrator.trim_end_matches('/').to_owned();
    let mut rows = Vec::new();
    let workers = match &targets.worker {
        Some(url) => vec![metrics_base(url)],
        None => match workers(&http, &base).await {
            Ok(w) => w,
            Err(e) => {
                rows.push(row("orchestrator", &base, Status::Fail, e));
                Vec::new()
            }
        },
    };
    let component = match action {
        Action::Start(r) => Some(r.fault.component()),
        _ => None,
    };
    let mut processes: Vec<(&str, String)> = Vec::new();
    if component != Some(Component::Worker) {
        processes.push(("orchestrator", base.clone()));
    }
    if component != Some(Component::Orchestrator) {
        processes.extend(workers.into_iter().map(|w| ("worker", w)));
    }
    if processes.is_empty() && rows.is_empty() {
        rows.push(row(
            "worker",
            "",
            Status::Fail,
            "the orchestrator lists no worker".into(),
        ));
    }
    for (what, url) in processes {
        let (status, detail) = call(&http, &url, action, targets.token.as_deref()).await;
        rows.push(row(what, &url, status, detail));
    }
    findings(rows)
}

/// The workers' metrics base URLs, from `/info`.
async fn workers(http: &reqwest::Client, base: &str) -> Result<Vec<String>, String> {
    let info: Value = http
        .get(format!("{base}/info"))
        .send()
        .await
        .map_err(|e| format!("{base}/info: {}", error_text(&e)))?
        .text()
        .await
        .map_err(|e| error_text(&e))
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))?;
    Ok(info["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["metrics_url"].as_str().filter(|u| !u.is_empty()))
        .map(metrics_base)
        .collect())
}

fn metrics_base(url: &str) -> String {
    url.trim_end_matches('/')
        .trim_end_matches("/metrics")
        .to_owned()
}

/// One process: the call, and what came of it.
async fn call(
    http: &reqwest::Client,
    base: &str,
    action: &Action,
    token: Option<&str>,
) -> (Status, String) {
    let url = format!("{base}/faults");
    let builder = match action {
        Action::Start(r) => http
            .post(&url)
            .header("content-type", "application/json")
            .body(serde_json::to_string(r).unwrap_or_default()),
        Action::List => http.get(&url),
        Action::Stop(None) => http.delete(&url),
        Action::Stop(Some(kind)) => http.delete(format!("{url}?kind={kind}")),
    };
    let builder = match token {
        Some(t) => builder.bearer_auth(t),
        None => builder,
    };
    let response = match builder.send().await {
        Ok(r) => r,
        Err(e) => return (Status::Fail, format!("{url}: {}", error_text(&e))),
    };
    let code = response.status().as_u16();
    let body: Value = response
        .text()
        .await
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    match code {
        200 | 201 => (Status::Ok, describe(action, &body)),
        401 => (
            Status::Fail,
            format!("{url}: 401, pass the process's --admin-token (or TTS_ADMIN_TOKEN)"),
        ),
        403 => (
            Status::Fail,
            format!("{url}: 403, the process was started without --allow-fault-injection"),
        ),
        404 => (
            Status::Fail,
            format!("{url}: 404, this version has no fault injection"),
        ),
        other => (
            Status::Fail,
            format!(
                "{url}: HTTP {other}: {}",
                body["error"].as_str().unwrap_or("no reason given")
            ),
        ),
    }
}

fn describe(action: &Action, body: &Value) -> String {
    match action {
        Action::Start(_) => format!(
            "started {} for {} s",
            body["kind"].as_str().unwrap_or("?"),
            body["remaining_s"]
        ),
        Action::Stop(_) => format!("stopped {}", body["stopped"]),
        Action::List => {
            let active: Vec<String> = body["active"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    format!(
                        "{} ({} s left)",
                        f["kind"].as_str().unwrap_or("?"),
                        f["remaining_s"]
                    )
                })
                .collect();
            let enabled = if body["enabled"] == true { "on" } else { "off" };
            if active.is_empty() {
                format!("fault injection {enabled}; none active")
            } else {
                format!("fault injection {enabled}; {}", active.join(", "))
            }
        }
    }
}

struct Row {
    process: String,
    url: String,
    status: Status,
    detail: String,
}

fn row(process: &str, url: &str, status: Status, detail: String) -> Row {
    Row {
        process: process.to_owned(),
        url: url.to_owned(),
        status,
        detail,
    }
}

fn findings(rows: Vec<Row>) -> Findings {
    let status = if rows.iter().any(|r| r.status == Status::Fail) {
        Status::Fail
    } else {
        Status::Ok
    };
    let detail = json!({
        "status": status,
        "processes": rows.iter().map(|r| json!({
            "process": r.process, "url": r.url, "status": r.status, "detail": r.detail,
        })).collect::<Vec<_>>(),
    });
    Findings {
        columns: ["process", "url", "status", "detail"]
            .map(String::from)
            .to_vec(),
        rows: rows
            .into_iter()
            .map(|r| vec![r.process, r.url, r.status.as_str().to_owned(), r.detail])
            .collect(),
        status,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tts_telemetry::faults::Fault;

    #[test]
    fn the_command_line_makes_a_checked_request() {
        let r = request(
            "link_latency",
            &Params {
                latency_ms: Some(80),
                ..Params::default()
            },
            30.0,
        )
        .expect("valid");
        assert_eq!(
            r.fault,
            Fault::LinkLatency {
                latency_ms: 80,
                jitter_ms: 0
            }
        );
        assert_eq!(r.duration_s, 30.0);
        let slow = request("slowdown", &Params::default(), 5.0).expect("defaults");
        assert_eq!(slow.fault, Fault::Slowdown { factor: 4.0 });
        for (kind, params, duration) in [
            ("meteor", Params::default(), 5.0),
            (
                "slowdown",
                Params {
                    factor: Some(0.5),
                    ..Params::default()
                },
                5.0,
            ),
            ("stall", Params::default(), 0.0),
            ("stall", Params::default(), 7200.0),
        ] {
            assert!(
                request(kind, &params, duration).is_err(),
                "{kind} {duration}"
            );
        }
    }

    #[test]
    fn a_worker_is_reached_at_its_metrics_listener() {
        assert_eq!(metrics_base("http://w:9091/metrics"), "http://w:9091");
        assert_eq!(metrics_base("http://w:9091/"), "http://w:9091");
    }
}
