//! The admin HTTP listener: `GET /health` and `GET /metrics`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::metrics::RelayStats;

/// What the admin routes read.
pub(crate) struct AdminState {
    pub(crate) channel: Channel,
    pub(crate) worker_url: String,
    pub(crate) stats: Arc<RelayStats>,
    pub(crate) metrics: Option<PrometheusHandle>,
}

/// The worker's answer to its gRPC health check.
#[derive(Debug, Serialize)]
pub(crate) struct WorkerHealth {
    url: String,
    /// `serving`, `not_serving` or `unreachable`.
    status: &'static str,
    latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Health {
    /// `ok` when the worker serves, else `degraded`: the process itself is up.
    status: &'static str,
    version: &'static str,
    worker: WorkerHealth,
    connections: u64,
    frames_received: u64,
    frames_sent: u64,
    frames_buffered: u64,
}

/// Asks the worker's `grpc.health.v1` about the `tts.v1.Tts` service.
pub(crate) async fn check_worker(channel: Channel, url: &str) -> WorkerHealth {
    let started = Instant::now();
    let mut client = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: "tts.v1.Tts".into(),
    };
    let answer = tokio::time::timeout(Duration::from_secs(2), client.check(request)).await;
    let (status, error) = match answer {
        Ok(Ok(resp)) if resp.get_ref().status == ServingStatus::Serving as i32 => ("serving", None),
        Ok(Ok(_)) => ("not_serving", None),
        Ok(Err(status)) => ("unreachable", Some(status.message().to_owned())),
        Err(_) => ("unreachable", Some("health check timed out".to_owned())),
    };
    WorkerHealth {
        url: url.to_owned(),
        status,
        latency_ms: started.elapsed().as_secs_f64() * 1e3,
        error,
    }
}

/// `GET /health`: always 200 while the process serves; the body says
/// whether the worker answers.
pub(crate) async fn health(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let worker = check_worker(state.channel.clone(), &state.worker_url).await;
    let s = &state.stats;
    Json(Health {
        status: if worker.status == "serving" {
            "ok"
        } else {
            "degraded"
        },
        version: env!("CARGO_PKG_VERSION"),
        worker,
        connections: s.connections.load(Ordering::Relaxed),
        frames_received: s.frames_received.load(Ordering::Relaxed),
        frames_sent: s.frames_sent.load(Ordering::Relaxed),
        frames_buffered: s.frames_buffered.load(Ordering::Relaxed),
    })
}

/// `GET /metrics`: Prometheus text exposition.
pub(crate) async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    match &state.metrics {
        Some(handle) => {
            handle.run_upkeep();
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                handle.render(),
            )
        }
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no metrics recorder installed in this process\n".to_owned(),
        ),
    }
}
