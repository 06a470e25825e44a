//! `doctor health`: the whole system's health in one table: the
//! orchestrator's liveness, readiness and metrics, the worker's gRPC health
//! and metrics, Redis if configured, listening ports, disk and memory (as
//! the orchestrator's readiness reports them), and the error and
//! checksum-failure counts the metrics hold. Given only the orchestrator's
//! admin address it finds the rest from its `/info`.

use std::time::Duration;

use serde_json::{Value, json};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tts_proto::v1::tts_client::TtsClient;
use tts_proto::v1::{ListVoicesRequest, ListVoicesResponse};

use super::prom::Exposition;
use super::{Findings, Status};

/// Where to look: the orchestrator's admin address, and overrides for what
/// its `/info` reports.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// Orchestrator admin base URL, e.g. `http://127.0.0.1:8081`.
    pub orchestrator: String,
    /// Worker gRPC URL; `None` uses the one the orchestrator reports.
    pub worker: Option<String>,
    /// Worker metrics URL (`…/metrics`); `None` uses the one the worker
    /// reports through the orchestrator.
    pub worker_metrics: Option<String>,
    /// WebSocket URL (its port is checked); `None` uses the orchestrator's.
    pub url: Option<String>,
    /// Redis URL, if one is used.
    pub redis: Option<String>,
}

/// What the orchestrator's `/info` says, where it says it.
#[derive(Debug, Default)]
struct Discovered {
    websocket_url: Option<String>,
    /// Every worker: its gRPC URL and where it serves metrics.
    workers: Vec<(String, Option<String>)>,
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

/// Runs every check.
pub async fn run(targets: &Targets) -> Findings {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let base = targets.orchestrator.trim_end_matches('/');
    let mut rows = Vec::new();

    // Where everything else is, unless the flags say.
    let discovered = match get(&http, &format!("{base}/info")).await {
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
    };
    let ws_url = targets
        .url
        .clone()
        .or(discovered.websocket_url)
        .unwrap_or_else(|| crate::DEFAULT_URL.to_owned());

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
            // Each worker's breaker and load, as routing sees them.
            for w in v["workers"].as_array().into_iter().flatten() {
                let breaker = w["breaker"].as_str().unwrap_or("?");
                let status = match (breaker, w["serving"].as_bool()) {
                    ("closed", Some(true)) => Status::Ok,
                    _ => Status::Warn,
                };
                let load = w["utilisation"].as_f64().map_or_else(
                    || "no load report".to_owned(),
                    |u| format!("utilisation {u:.2}"),
                );
                rows.push(row(
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
                ));
            }
        }
        Err(e) => rows.push(row("orchestrator /ready", Status::Fail, e)),
    }

    // Metrics, and what they say about errors.
    match get(&http, &format!("{base}/metrics")).await {
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

    // Every worker: the one named by the flags, or those the orchestrator
    // reports, or the default.
    let mut workers = match &targets.worker {
        Some(url) => vec![(url.clone(), None)],
        None => discovered.workers,
    };
    if workers.is_empty() {
        let url = reported_worker.unwrap_or_else(|| "http://127.0.0.1:7001".to_owned());
        workers.push((url, None));
    }
    if let Some(metrics) = &targets.worker_metrics {
        for w in &mut workers {
            w.1 = Some(metrics.clone());
        }
    }
    for (worker, metrics) in &workers {
        rows.push(worker_health(worker).await);
        rows.push(worker_device(worker).await);
        let metrics = metrics
            .clone()
            .unwrap_or_else(|| DEFAULT_WORKER_METRICS.to_owned());
        rows.push(match get(&http, &metrics).await {
            Ok((200, text)) => match Exposition::parse(&text) {
                Ok(_) => row(
                    "worker /metrics",
                    Status::Ok,
                    format!("{metrics}: {} lines", text.lines().count()),
                ),
                Err(e) => row(
                    "worker /metrics",
                    Status::Fail,
                    format!("{metrics}: not a Prometheus exposition: {e}"),
                ),
            },
            Ok((code, _)) => row("worker /metrics", Status::Warn, format!("HTTP {code}")),
            Err(e) => row("worker /metrics", Status::Warn, format!("{metrics}: {e}")),
        });
    }

    if let Some(url) = &targets.redis {
        rows.push(redis_ping(url).await);
    }
    for (name, url) in [("websocket port", ws_url.as_str()), ("admin port", base)] {
        rows.push(port_open(name, url).await);
    }
    for (worker, _) in &workers {
        rows.push(port_open("worker port", worker).await);
    }
    findings(rows)
}

/// One probe: a worker's gRPC health (`grpc`) or an HTTP 200 (`http`).
pub async fn probe(grpc: Option<&str>, http: Option<&str>) -> Findings {
    let row = match (grpc, http) {
        (Some(url), _) => worker_health(url).await,
        (None, Some(url)) => {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default();
            match get(&client, url).await {
                Ok((200, _)) => row("http", Status::Ok, format!("{url}: 200")),
                Ok((code, body)) => row(
                    "http",
                    Status::Fail,
                    format!(
                        "{url}: HTTP {code} {}",
                        body.chars().take(200).collect::<String>()
                    ),
                ),
                Err(e) => row("http", Status::Fail, format!("{url}: {e}")),
            }
        }
        (None, None) => row("probe", Status::Fail, "nothing to probe"),
    };
    findings(vec![row])
}

/// Where a worker's metrics are when nothing says otherwise.
pub const DEFAULT_WORKER_METRICS: &str = "http://127.0.0.1:9091/metrics";

fn metric_rows(metrics: &Exposition) -> Vec<Row> {
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

/// A gRPC channel to a worker, or why there is none.
async fn connect(url: &str) -> Result<tonic::transport::Channel, String> {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| error_text(&e))
}

async fn worker_health(url: &str) -> Row {
    let check = async {
        let channel = connect(url).await?;
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

/// Where a worker synthesises, from its `ListVoices`: the device, its
/// voices, and each GPU's memory and driver.
async fn worker_device(url: &str) -> Row {
    let ask = async {
        let channel = connect(url).await?;
        TtsClient::new(channel)
            .list_voices(ListVoicesRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| s.message().to_owned())
    };
    match tokio::time::timeout(Duration::from_secs(5), ask).await {
        Ok(Ok(voices)) => device_row(url, &voices),
        Ok(Err(e)) => row(
            "worker device",
            Status::Warn,
            format!("{url}: ListVoices: {e}"),
        ),
        Err(_) => row(
            "worker device",
            Status::Warn,
            format!("{url}: no answer within 5 s"),
        ),
    }
}

/// GPU memory below this share free is a warning.
const GPU_FREE_WARN: f64 = 0.1;

fn device_row(url: &str, v: &ListVoicesResponse) -> Row {
    let device = if v.device.is_empty() {
        "cpu"
    } else {
        v.device.as_str()
    };
    let timed = v.voices.iter().filter(|v| v.timestamps).count();
    let mut detail = format!(
        "{url}: {device}, {} voices ({timed} with word timestamps), version {}",
        v.voices.len(),
        v.version
    );
    let mut status = Status::Ok;
    for g in &v.gpus {
        let mib = |b: u64| b / (1 << 20);
        detail.push_str(&format!(
            "; GPU {} {} (compute {}): {} of {} MiB free, driver {}",
            g.index,
            g.name,
            g.compute_capability,
            mib(g.free_memory_bytes),
            mib(g.total_memory_bytes),
            g.driver_version
        ));
        if (g.free_memory_bytes as f64) < GPU_FREE_WARN * g.total_memory_bytes as f64 {
            status = Status::Warn;
        }
    }
    if device.starts_with("cuda") && v.gpus.is_empty() {
        status = Status::Warn;
        detail.push_str("; the worker reports no GPU");
    }
    row("worker device", status, detail)
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
    fn the_device_row_names_the_gpus_and_warns_when_memory_is_short() {
        use tts_proto::v1::{Gpu, Voice};
        let voice = |timestamps| Voice {
            timestamps,
            ..Voice::default()
        };
        let cpu = ListVoicesResponse {
            voices: vec![voice(true), voice(false)],
            device: "cpu".into(),
            version: "0.1.0".into(),
            ..ListVoicesResponse::default()
        };
        let r = device_row("http://w:7001", &cpu);
        assert_eq!(r.status, Status::Ok);
        assert!(
            r.detail.contains("cpu, 2 voices (1 with word timestamps)"),
            "{}",
            r.detail
        );
        let gpu = |free_mib: u64| Gpu {
            index: 0,
            name: "NVIDIA H100 80GB HBM3".into(),
            compute_capability: "9.0".into(),
            total_memory_bytes: 81_079 << 20,
            free_memory_bytes: free_mib << 20,
            driver_version: "13.0".into(),
        };
        let mut cuda = ListVoicesResponse {
            device: "cuda:0".into(),
            gpus: vec![gpu(80_000)],
            ..cpu.clone()
        };
        let r = device_row("http://w:7001", &cuda);
        assert_eq!(r.status, Status::Ok);
        assert!(
            r.detail.contains(
                "GPU 0 NVIDIA H100 80GB HBM3 (compute 9.0): 80000 of 81079 MiB free, driver 13.0"
            ),
            "{}",
            r.detail
        );
        cuda.gpus = vec![gpu(4_000)];
        assert_eq!(device_row("u", &cuda).status, Status::Warn, "5 % free");
        cuda.gpus.clear();
        assert_eq!(
            device_row("u", &cuda).status,
            Status::Warn,
            "no GPU reported"
        );
    }

    #[test]
    fn error_counts_decide_the_status() {
        let metrics = Exposition::parse(
            "# TYPE tts_orchestrator_requests_total counter\n\
             tts_orchestrator_requests_total{outcome=\"completed\",code=\"none\"} 99\n\
             # TYPE tts_orchestrator_frames_total counter\n\
             tts_orchestrator_frames_total{hop=\"worker_to_orchestrator\",result=\"checksum_mismatch\"} 1\n",
        )
        .expect("parses");
        let rows = metric_rows(&metrics);
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
