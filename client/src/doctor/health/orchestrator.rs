//! The orchestrator's admin endpoints: `/info` (where everything else
//! is), `/health`, `/ready` (its checks and each worker as routing sees
//! it) and `/metrics` (and the error counts it holds).

use serde_json::Value;

use super::get;
use super::rows::{Row, row};
use crate::doctor::Status;
use crate::doctor::prom::Exposition;

/// What the orchestrator's `/info` says, where it says it.
#[derive(Debug, Default)]
pub(super) struct Discovered {
    pub(super) websocket_url: Option<String>,
    /// Every worker: its gRPC URL and where it serves metrics.
    pub(super) workers: Vec<(String, Option<String>)>,
}

impl Discovered {
    fn from_info(v: &Value) -> Self {
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        let workers = v["workers"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|w| Some((text(&w["url"])?, text(&w["metrics_url"]))))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            websocket_url: text(&v["websocket_url"]),
            workers,
        }
    }
}

/// `/info`: its row, and where the clients and workers are.
pub(super) async fn info(http: &reqwest::Client, base: &str, rows: &mut Vec<Row>) -> Discovered {
    match get(http, &format!("{base}/info")).await {
        Ok((200, body)) => {
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            let found = Discovered::from_info(&v);
            rows.push(row(
                "orchestrator /info",
                Status::Ok,
                format!(
                    "build {}, clients at {}",
                    v["build"].as_str().unwrap_or("?"),
                    found.websocket_url.as_deref().unwrap_or("?")
                ),
            ));
            found
        }
        Ok((code, _)) => {
            rows.push(row(
                "orchestrator /info",
                Status::Warn,
                format!("HTTP {code}"),
            ));
            Discovered::default()
        }
        Err(e) => {
            rows.push(row("orchestrator /info", Status::Fail, e));
            Discovered::default()
        }
    }
}

/// `/health`: its row, and the worker URL the orchestrator relays to.
pub(super) async fn liveness(
    http: &reqwest::Client,
    base: &str,
    rows: &mut Vec<Row>,
) -> Option<String> {
    match get(http, &format!("{base}/health")).await {
        Ok((200, body)) => {
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            rows.push(row(
                "orchestrator /health",
                Status::Ok,
                format!("version {}", v["version"].as_str().unwrap_or("?")),
            ));
            v["worker_url"].as_str().map(str::to_owned)
        }
        Ok((code, _)) => {
            rows.push(row(
                "orchestrator /health",
                Status::Fail,
                format!("HTTP {code}"),
            ));
            None
        }
        Err(e) => {
            rows.push(row("orchestrator /health", Status::Fail, e));
            None
        }
    }
}

/// `/ready`: its overall row, then a row per check and per worker.
pub(super) async fn readiness(http: &reqwest::Client, base: &str, rows: &mut Vec<Row>) {
    let (code, body) = match get(http, &format!("{base}/ready")).await {
        Ok(answer) => answer,
        Err(e) => {
            rows.push(row("orchestrator /ready", Status::Fail, e));
            return;
        }
    };
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    let overall = v["status"].as_str().unwrap_or("?").to_owned();
    let status = match overall.as_str() {
        "healthy" => Status::Ok,
        "degraded" => Status::Warn,
        _ => Status::Fail,
    };
    rows.push(row(
        "orchestrator /ready",
        status,
        format!("HTTP {code}, {overall}"),
    ));
    if let Some(checks) = v["checks"].as_object() {
        for (name, c) in checks {
            let status = match c["status"].as_str() {
                Some("ok") => Status::Ok,
                Some("warn") => Status::Warn,
                _ => Status::Fail,
            };
            rows.push(row(
                format!("  ready: {name}"),
                status,
                c["detail"].as_str().unwrap_or_default(),
            ));
        }
    }
    // Each worker's breaker and load, as routing sees them.
    for w in v["workers"].as_array().into_iter().flatten() {
        rows.push(routed_worker(w));
    }
}

/// A worker in `/ready`: serving, its breaker, load and in-flight count.
fn routed_worker(w: &Value) -> Row {
    let breaker = w["breaker"].as_str().unwrap_or("?");
    let status = match (breaker, w["serving"].as_bool()) {
        ("closed", Some(true)) => Status::Ok,
        _ => Status::Warn,
    };
    let load = w["utilisation"].as_f64().map_or_else(
        || "no load report".to_owned(),
        |u| format!("utilisation {u:.2}"),
    );
    row(
        format!("  worker {}", w["url"].as_str().unwrap_or("?")),
        status,
        format!(
            "{}, breaker {breaker}, {load}, {} in flight{}",
            if w["serving"].as_bool() == Some(true) {
                "serving"
            } else {
                "not serving"
            },
            w["inflight"].as_u64().unwrap_or(0),
            w["problem"]
                .as_str()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default(),
        ),
    )
}

/// `/metrics`: its row, and what the counts say about errors.
pub(super) async fn metrics(http: &reqwest::Client, base: &str, rows: &mut Vec<Row>) {
    match get(http, &format!("{base}/metrics")).await {
        Ok((200, text)) => match Exposition::parse(&text) {
            Ok(metrics) => {
                rows.push(row(
                    "orchestrator /metrics",
                    Status::Ok,
                    format!("{} lines", text.lines().count()),
                ));
                rows.extend(metric_rows(&metrics));
            }
            Err(e) => rows.push(row(
                "orchestrator /metrics",
                Status::Fail,
                format!("not a Prometheus exposition: {e}"),
            )),
        },
        Ok((code, _)) => rows.push(row(
            "orchestrator /metrics",
            Status::Fail,
            format!("HTTP {code}"),
        )),
        Err(e) => rows.push(row("orchestrator /metrics", Status::Fail, e)),
    }
}

/// Failed requests, checksum mismatches, bad frames and quality events.
pub(super) fn metric_rows(metrics: &Exposition) -> Vec<Row> {
    let failed = metrics.sum("tts_orchestrator_requests_total", &[("outcome", "failed")]);
    // Server-side failures against every request (client mistakes and
    // refusals are not failures).
    let total = metrics.sum("tts_orchestrator_requests_total", &[]);
    let checksum = metrics.sum(
        "tts_orchestrator_frames_total",
        &[("result", "checksum_mismatch")],
    );
    let bad = metrics.sum("tts_orchestrator_frames_total", &[("result", "bad_size")])
        + metrics.sum(
            "tts_orchestrator_frames_total",
            &[("result", "out_of_sequence")],
        );
    let quality = metrics.sum("tts_orchestrator_frame_quality_events_total", &[]);
    let error_rate = if total > 0.0 { failed / total } else { 0.0 };
    vec![
        row(
            "  requests failed",
            if error_rate > 0.01 {
                Status::Warn
            } else {
                Status::Ok
            },
            format!("{failed} of {total} ({:.2} %)", error_rate * 100.0),
        ),
        row(
            "  checksum mismatches",
            if checksum > 0.0 {
                Status::Fail
            } else {
                Status::Ok
            },
            format!("{checksum}"),
        ),
        row(
            "  bad size / out of sequence",
            if bad > 0.0 { Status::Fail } else { Status::Ok },
            format!("{bad}"),
        ),
        row(
            "  audio quality events",
            if quality > 0.0 {
                Status::Warn
            } else {
                Status::Ok
            },
            format!("{quality} (clipping, DC offset, dead air, leading silence)"),
        ),
    ]
}
