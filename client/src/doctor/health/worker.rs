//! Each worker: its gRPC health, the device it synthesises on (from
//! `ListVoices`) and its metrics endpoint.

use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tts_proto::v1::tts_client::TtsClient;
use tts_proto::v1::{ListVoicesRequest, ListVoicesResponse};

use super::rows::{Row, row};
use super::{Targets, error_text, get};
use crate::doctor::Status;
use crate::doctor::prom::Exposition;

/// Where a worker's metrics are when nothing says otherwise.
pub const DEFAULT_WORKER_METRICS: &str = "http://127.0.0.1:9091/metrics";

/// Every worker to check, with where it serves metrics: the one named by
/// the flags, or those the orchestrator reports, or the default.
pub(super) fn targets(
    targets: &Targets,
    discovered: Vec<(String, Option<String>)>,
    reported: Option<String>,
) -> Vec<(String, Option<String>)> {
    let mut workers = match &targets.worker {
        Some(url) => vec![(url.clone(), None)],
        None => discovered,
    };
    if workers.is_empty() {
        let url = reported.unwrap_or_else(|| "http://127.0.0.1:7001".to_owned());
        workers.push((url, None));
    }
    if let Some(metrics) = &targets.worker_metrics {
        for w in &mut workers {
            w.1 = Some(metrics.clone());
        }
    }
    workers
}

/// A worker's rows: gRPC health, device, metrics.
pub(super) async fn rows(http: &reqwest::Client, worker: &str, metrics: Option<&str>) -> [Row; 3] {
    let metrics = metrics.unwrap_or(DEFAULT_WORKER_METRICS);
    let scraped = match get(http, metrics).await {
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
    };
    [
        worker_health(worker).await,
        worker_device(worker).await,
        scraped,
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

pub(super) async fn worker_health(url: &str) -> Row {
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

pub(super) fn device_row(url: &str, v: &ListVoicesResponse) -> Row {
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
