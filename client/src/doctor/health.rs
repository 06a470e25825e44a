//! `doctor health`: the whole system's health in one table: the
//! orchestrator's liveness, readiness and metrics, the worker's gRPC health
//! and metrics, Redis if configured, listening ports, disk and memory (as
//! the orchestrator's readiness reports them), and the error and
//! checksum-failure counts the metrics hold.

use std::time::Duration;

use serde_json::{Value, json};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::{Findings, Status};

/// Where to look.
#[derive(Debug, Clone)]
pub struct Targets {
    /// Orchestrator admin base URL, e.g. `http://127.0.0.1:8081`.
    pub orchestrator: String,
    /// Worker gRPC URL; `None` uses the one the orchestrator reports.
    pub worker: Option<String>,
    /// Worker metrics URL (`…/metrics`).
    pub worker_metrics: String,
    /// WebSocket URL (its port is checked).
    pub url: String,
    /// Redis URL, if one is used.
    pub redis: Option<String>,
}

struct Row {
    check: String,
    status: Status,
    detail: String,
}

fn row(check: impl Into<String>, status: Status, detail: impl Into<String>) -> Row {
    Row {
        check: check.into(),
        status,
        detail: detail.into(),
    }
}

async fn get(http: &reqwest::Client, url: &str) -> Result<(u16, String), String> {
    let resp = http.get(url).send().await.map_err(|e| error_text(&e))?;
    let status = resp.status().as_u16();
    let body = resp.text().await.map_err(|e| error_text(&e))?;
    Ok((status, body))
}

/// An error and its sources, each said once.
pub(crate) fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Sums the samples of `metric` whose labels contain every `label="value"`
/// pair in `filter`, from a Prometheus text exposition.
pub fn sum_metric(exposition: &str, metric: &str, filter: &[&str]) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name_labels, value) = l.rsplit_once(' ')?;
            let (name, labels) = match name_labels.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (name_labels, ""),
            };
            (name == metric && filter.iter().all(|f| labels.split(',').any(|p| p == *f)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .fold(0.0, |total, v| total + v)
}

/// Runs every check.
pub async fn run(targets: &Targets) -> Findings {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let base = targets.orchestrator.trim_end_matches('/');
    let mut rows = Vec::new();

    // Liveness, and the worker URL the orchestrator relays to.
    let mut reported_worker = None;
    match get(&http, &format!("{base}/health")).await {
        Ok((200, body)) => {
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            reported_worker = v["worker_url"].as_str().map(str::to_owned);
            rows.push(row(
                "orchestrator /health",
                Status::Ok,
                format!("version {}", v["version"].as_str().unwrap_or("?")),
            ));
        }
        Ok((code, _)) => rows.push(row(
            "orchestrator /health",
            Status::Fail,
            format!("HTTP {code}"),
        )),
        Err(e) => rows.push(row("orchestrator /health", Status::Fail, e)),
    }

    // Readiness: its checks become rows of their own.
    match get(&http, &format!("{base}/ready")).await {
        Ok((code, body)) => {
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
        }
        Err(e) => rows.push(row("orchestrator /ready", Status::Fail, e)),
    }

    // Metrics, and what they say about errors.
    match get(&http, &format!("{base}/metrics")).await {
        Ok((200, text)) => {
            rows.push(row(
                "orchestrator /metrics",
                Status::Ok,
                format!("{} lines", text.lines().count()),
            ));
            rows.extend(metric_rows(&text));
        }
        Ok((code, _)) => rows.push(row(
            "orchestrator /metrics",
            Status::Fail,
            format!("HTTP {code}"),
        )),
        Err(e) => rows.push(row("orchestrator /metrics", Status::Fail, e)),
    }

    let worker = targets
        .worker
        .clone()
        .or(reported_worker)
        .unwrap_or_else(|| "http://127.0.0.1:7001".to_owned());
    rows.push(worker_health(&worker).await);
    rows.push(match get(&http, &targets.worker_metrics).await {
        Ok((200, text)) => row(
            "worker /metrics",
            Status::Ok,
            format!("{} lines", text.lines().count()),
        ),
        Ok((code, _)) => row("worker /metrics", Status::Warn, format!("HTTP {code}")),
        Err(e) => row(
            "worker /metrics",
            Status::Warn,
            format!("{e} (none when the worker is embedded)"),
        ),
    });

    if let Some(url) = &targets.redis {
        rows.push(redis_ping(url).await);
    }
    for (name, url) in [
        ("websocket port", targets.url.as_str()),
        ("admin port", base),
        ("worker port", worker.as_str()),
    ] {
        rows.push(port_open(name, url).await);
    }
    findings(rows)
}

fn metric_rows(text: &str) -> Vec<Row> {
    let failed = sum_metric(
        text,
        "tts_orchestrator_requests_total",
        &["outcome=\"failed\""],
    );
    let completed = sum_metric(
        text,
        "tts_orchestrator_requests_total",
        &["outcome=\"completed\""],
    );
    let checksum = sum_metric(
        text,
        "tts_orchestrator_frames_total",
        &["result=\"checksum_mismatch\""],
    );
    let bad = sum_metric(
        text,
        "tts_orchestrator_frames_total",
        &["result=\"bad_size\""],
    ) + sum_metric(
        text,
        "tts_orchestrator_frames_total",
        &["result=\"out_of_sequence\""],
    );
    let quality = sum_metric(text, "tts_orchestrator_frame_quality_events_total", &[]);
    let total = failed + completed;
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

async fn worker_health(url: &str) -> Row {
    let check = async {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .map_err(|e| error_text(&e))?;
        let request = HealthCheckRequest {
            service: "tts.v1.Tts".into(),
        };
        HealthClient::new(channel)
            .check(request)
            .await
            .map(|r| r.into_inner().status)
            .map_err(|s| s.message().to_owned())
    };
    match tokio::time::timeout(Duration::from_secs(5), check).await {
        Ok(Ok(s)) if s == ServingStatus::Serving as i32 => {
            row("worker gRPC health", Status::Ok, format!("{url} SERVING"))
        }
        Ok(Ok(s)) => row(
            "worker gRPC health",
            Status::Fail,
            format!(
                "{url} {}",
                ServingStatus::try_from(s)
                    .unwrap_or(ServingStatus::Unknown)
                    .as_str_name()
            ),
        ),
        Ok(Err(e)) => row("worker gRPC health", Status::Fail, format!("{url}: {e}")),
        Err(_) => row(
            "worker gRPC health",
            Status::Fail,
            format!("{url}: no answer within 5 s"),
        ),
    }
}

async fn redis_ping(url: &str) -> Row {
    let ping = async {
        let client = redis::Client::open(url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Ok(pong)) => row("redis PING", Status::Ok, pong),
        Ok(Err(e)) => row("redis PING", Status::Fail, e.to_string()),
        Err(_) => row("redis PING", Status::Fail, "no answer within 2 s"),
    }
}

/// Whether the host:port of `url` accepts TCP connections.
async fn port_open(name: &str, url: &str) -> Row {
    let authority = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or_default();
    let connect = tokio::net::TcpStream::connect(authority);
    match tokio::time::timeout(Duration::from_secs(2), connect).await {
        Ok(Ok(_)) => row(format!("listening: {name}"), Status::Ok, authority),
        Ok(Err(e)) => row(
            format!("listening: {name}"),
            Status::Fail,
            format!("{authority}: {e}"),
        ),
        Err(_) => row(
            format!("listening: {name}"),
            Status::Fail,
            format!("{authority}: timed out"),
        ),
    }
}

fn findings(rows: Vec<Row>) -> Findings {
    let status = rows
        .iter()
        .map(|r| r.status)
        .fold(Status::Ok, |worst, s| match (worst, s) {
            (Status::Fail, _) | (_, Status::Fail) => Status::Fail,
            (Status::Warn, _) | (_, Status::Warn) => Status::Warn,
            _ => Status::Ok,
        });
    let detail = json!({
        "status": status,
        "checks": rows.iter().map(|r| json!({"check": r.check.trim(), "status": r.status, "detail": r.detail})).collect::<Vec<_>>(),
    });
    Findings {
        columns: vec!["check".into(), "status".into(), "detail".into()],
        rows: rows
            .into_iter()
            .map(|r| vec![r.check, r.status.as_str().to_owned(), r.detail])
            .collect(),
        status,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_labelled_samples() {
        let text = "# TYPE x counter\n\
            tts_orchestrator_frames_total{hop=\"a\",result=\"ok\"} 10\n\
            tts_orchestrator_frames_total{hop=\"b\",result=\"ok\"} 5\n\
            tts_orchestrator_frames_total{hop=\"a\",result=\"checksum_mismatch\"} 2\n\
            other_total 7\n";
        assert_eq!(
            sum_metric(text, "tts_orchestrator_frames_total", &["result=\"ok\""]),
            15.0
        );
        assert_eq!(
            sum_metric(
                text,
                "tts_orchestrator_frames_total",
                &["hop=\"a\"", "result=\"ok\""]
            ),
            10.0
        );
        assert_eq!(sum_metric(text, "other_total", &[]), 7.0);
        assert_eq!(sum_metric(text, "missing", &[]), 0.0);
    }

    #[test]
    fn error_counts_decide_the_status() {
        let rows = metric_rows(
            "tts_orchestrator_requests_total{outcome=\"completed\",code=\"none\"} 99\n\
             tts_orchestrator_frames_total{hop=\"worker_to_orchestrator\",result=\"checksum_mismatch\"} 1\n",
        );
        let checksum = rows
            .iter()
            .find(|r| r.check.contains("checksum"))
            .expect("row");
        assert_eq!(checksum.status, Status::Fail);
        let failed = rows
            .iter()
            .find(|r| r.check.contains("failed"))
            .expect("row");
        assert_eq!(failed.status, Status::Ok);
    }
}
