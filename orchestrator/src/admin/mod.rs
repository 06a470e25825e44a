//! The admin HTTP listener: `GET /health` (liveness), `GET /ready`
//! (readiness, with `?deep=1` adding a synthesis canary), `GET /info`
//! (where the pipeline's parts are) and `GET /metrics`. The bodies are the
//! shared `tts_protocol::admin` types the doctor reads.

mod canary;
mod checks;
mod info;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use tokio::sync::Mutex;
use tts_telemetry::MetricsHandle;
use tts_telemetry::faults::{Component, Faults};

use crate::config::OrchestratorConfig;
use crate::metrics::RelayStats;
use crate::pool::{Pool, WorkerStatus};
use crate::protocol::admin::{
    Check, CheckStatus, FaultEntry, Liveness, Readiness, ReadyStatus, WorkerState,
};
pub(crate) use info::info;

/// What the admin routes read.
pub(crate) struct AdminState {
    pub(crate) pool: Arc<Pool>,
    pub(crate) config: OrchestratorConfig,
    pub(crate) stats: Arc<RelayStats>,
    pub(crate) metrics: Option<MetricsHandle>,
    pub(crate) canary: Mutex<Option<(Instant, Check)>>,
    /// Cancelled when shutdown begins: readiness turns 503.
    pub(crate) draining: tokio_util::sync::CancellationToken,
    /// The client listener's address, and whether it speaks TLS.
    pub(crate) ws_addr: std::net::SocketAddr,
    pub(crate) ws_tls: bool,
    /// Injected faults (chaos experiments), shown in `/ready`.
    pub(crate) faults: Arc<Faults>,
    /// Readiness's Redis connection: made at the first check that
    /// reaches Redis, then shared by every check (it reconnects by itself).
    pub(crate) redis: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
}

/// Keeps the worker and readiness gauges current: every 2 s until `stop`.
pub(crate) async fn watch(
    pool: Arc<Pool>,
    draining: tokio_util::sync::CancellationToken,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let serving = pool
            .statuses()
            .iter()
            .any(|w| w.serving && w.breaker != "open");
        crate::metrics::state(serving, serving && !draining.is_cancelled());
    }
}

/// One worker as `/ready`, `/health` and the doctor show it.
fn worker_state(w: &WorkerStatus) -> WorkerState {
    WorkerState {
        url: w.url.clone(),
        source: w.source.to_owned(),
        serving: w.serving,
        breaker: w.breaker.to_owned(),
        utilisation: w.utilisation,
        streams: w.streams,
        inflight: w.inflight,
        voices: w.voices,
        problem: w.problem.clone(),
    }
}

/// `GET /health`: 200 while the process serves; the body also says whether
/// the worker answers its gRPC health check.
pub(crate) async fn health(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let worker = checks::workers(&state.pool).await;
    let s = &state.stats;
    Json(Liveness {
        status: "ok".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        worker_url: state
            .pool
            .all()
            .first()
            .map(|w| w.url.clone())
            .unwrap_or_default(),
        worker,
        workers: state.pool.statuses().iter().map(worker_state).collect(),
        connections: s.connections.load(Ordering::Relaxed),
        frames_received: s.frames_received.load(Ordering::Relaxed),
        frames_sent: s.frames_sent.load(Ordering::Relaxed),
        frames_buffered: s.frames_buffered.load(Ordering::Relaxed),
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct ReadyQuery {
    #[serde(default)]
    deep: Option<String>,
}

/// The faults injected now: this orchestrator's own, then each worker's
/// as its last load report said.
fn injected(faults: &Faults, workers: &[WorkerStatus]) -> Vec<FaultEntry> {
    let own = faults
        .list()
        .into_iter()
        .filter(|f| f.fault.component() == Component::Orchestrator)
        .filter_map(|f| serde_json::from_value(serde_json::to_value(f).ok()?).ok());
    let theirs = workers.iter().flat_map(|w| {
        w.faults.iter().map(|f| FaultEntry {
            component: "worker".to_owned(),
            worker: Some(w.url.clone()),
            kind: f.kind.clone(),
            remaining_s: f.remaining_s,
            params: serde_json::from_str(&f.params_json).unwrap_or_default(),
        })
    });
    own.chain(theirs).collect()
}

/// A readiness body with these checks and every worker.
fn readiness(state: &AdminState, checks: BTreeMap<String, Check>) -> Readiness {
    let status = if checks.values().any(|c| c.status == CheckStatus::Fail) {
        ReadyStatus::Unhealthy
    } else if checks.values().any(|c| c.status == CheckStatus::Warn) {
        ReadyStatus::Degraded
    } else {
        ReadyStatus::Healthy
    };
    let workers = state.pool.statuses();
    Readiness {
        status,
        checks,
        fault_injection: injected(&state.faults, &workers),
        workers: workers.iter().map(worker_state).collect(),
    }
}

/// `GET /ready[?deep=1]`: every check with its status, latency and detail;
/// 200 when healthy or degraded, 503 when unhealthy.
pub(crate) async fn ready(
    State(state): State<Arc<AdminState>>,
    Query(query): Query<ReadyQuery>,
) -> impl IntoResponse {
    let config = &state.config;
    let mut checks = BTreeMap::new();
    if state.draining.is_cancelled() {
        let detail = "shutting down: draining requests";
        let drain = checks::check(CheckStatus::Fail, Instant::now(), detail);
        checks.insert("drain".to_owned(), drain);
        let body = readiness(&state, checks);
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
    }
    checks.insert("worker".into(), checks::workers(&state.pool).await);
    checks.insert("disk".into(), checks::disk(config.min_free_disk_mb));
    checks.insert(
        "memory".into(),
        checks::memory(config.min_available_memory_mb),
    );
    if let Some(url) = &config.redis_url {
        checks.insert("redis".into(), checks::redis(&state.redis, url).await);
    }
    if matches!(query.deep.as_deref(), Some("1" | "true")) {
        checks.insert("canary".into(), canary::cached(&state).await);
    }
    let body = readiness(&state, checks);
    let code = if body.status == ReadyStatus::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body))
}

/// `GET /metrics`: Prometheus text exposition.
pub(crate) async fn metrics(State(state): State<Arc<AdminState>>) -> axum::response::Response {
    match &state.metrics {
        Some(handle) => tts_telemetry::metrics::metrics_response(handle).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no metrics recorder installed in this process\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tts_proto::v1::InjectedFault;

    use super::*;

    #[test]
    fn a_workers_fault_shows_with_its_worker_and_parameters() {
        let faults = Faults::new(&[Component::Orchestrator], false, None);
        let worker = WorkerStatus {
            url: "http://w:1".into(),
            source: "static",
            serving: true,
            breaker: "closed",
            utilisation: Some(0.5),
            streams: Some(2),
            inflight: 1,
            voices: None,
            problem: None,
            faults: vec![InjectedFault {
                kind: "slowdown".into(),
                params_json: r#"{"factor":4.0}"#.into(),
                remaining_s: 3.0,
            }],
        };
        let entries = injected(&faults, std::slice::from_ref(&worker));
        assert_eq!(
            serde_json::to_value(&entries).expect("json"),
            json!([{"component": "worker", "worker": "http://w:1", "kind": "slowdown",
                "remaining_s": 3.0, "factor": 4.0}])
        );
        let state = serde_json::to_value(worker_state(&worker)).expect("json");
        assert_eq!(state["breaker"], "closed");
        assert!(state.get("problem").is_none(), "no problem, no field");
    }
}
