//! The bodies of the orchestrator's admin endpoints: `GET /info`,
//! `GET /health` and `GET /ready`. The orchestrator writes them and the
//! doctor reads them with the same types; every field has a default, so
//! a reader of an older or newer orchestrator still gets what is there.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Fine.
    #[default]
    Ok,
    /// Degrades readiness.
    Warn,
    /// Makes the orchestrator unhealthy.
    Fail,
    /// A status this reader does not know.
    #[serde(other)]
    Unknown,
}

/// One readiness check's result.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Check {
    /// Its verdict.
    pub status: CheckStatus,
    /// How long it took, ms.
    pub latency_ms: f64,
    /// What it found.
    pub detail: String,
}

/// The orchestrator's overall readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadyStatus {
    /// Every check passes.
    #[default]
    Healthy,
    /// Some check warns; requests are still taken.
    Degraded,
    /// Some check fails (or it is draining): 503.
    Unhealthy,
    /// A status this reader does not know.
    #[serde(other)]
    Unknown,
}

/// One worker as routing sees it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerState {
    /// Its gRPC URL.
    pub url: String,
    /// `static` (from `--worker`) or `registry`.
    pub source: String,
    /// Whether its last load report said it serves.
    pub serving: bool,
    /// Its circuit breaker: `closed`, `half_open` or `open`.
    pub breaker: String,
    /// Its last reported admission utilisation.
    pub utilisation: Option<f64>,
    /// Its last reported streams.
    pub streams: Option<u32>,
    /// This orchestrator's requests on it now.
    pub inflight: u32,
    /// Voices it listed (none until asked).
    pub voices: Option<usize>,
    /// Why its last poll failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// A fault injected now, in this orchestrator or a worker.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultEntry {
    /// `orchestrator` or `worker`.
    pub component: String,
    /// The worker it is injected into (worker faults).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Its kind (`link_latency`, `slowdown`, …).
    pub kind: String,
    /// Seconds left.
    pub remaining_s: f64,
    /// Its parameters (and, for this orchestrator's own, its id and
    /// start).
    #[serde(flatten)]
    pub params: Map<String, Value>,
}

/// `GET /ready`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Readiness {
    /// The overall verdict.
    pub status: ReadyStatus,
    /// Each check by name (`worker`, `disk`, `memory`, `redis`, `canary`,
    /// `drain`).
    pub checks: BTreeMap<String, Check>,
    /// Every worker.
    pub workers: Vec<WorkerState>,
    /// Every fault injected now; empty outside experiments.
    pub fault_injection: Vec<FaultEntry>,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Liveness {
    /// `ok` while the process serves.
    pub status: String,
    /// The orchestrator's version.
    pub version: String,
    /// Where requests are relayed (the first worker).
    pub worker_url: String,
    /// The workers' gRPC health, for information.
    pub worker: Check,
    /// Every worker.
    pub workers: Vec<WorkerState>,
    /// Open WebSocket connections.
    pub connections: u64,
    /// Frames received from workers.
    pub frames_received: u64,
    /// Frames sent to clients.
    pub frames_sent: u64,
    /// Frames queued for clients now.
    pub frames_buffered: u64,
}

/// One worker as `/info` describes it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerInfo {
    /// Its gRPC URL.
    pub url: String,
    /// Where it serves metrics, as it reports it (empty if unknown).
    pub metrics_url: String,
    /// Its version.
    pub version: String,
    /// Its voices.
    pub voices: Vec<String>,
    /// Its default voice.
    pub default_voice: String,
    /// Where it synthesises: `cpu` or `cuda:N`.
    pub device: String,
    /// Its GPUs, described, when it runs on one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
    /// Why the worker could not be asked, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /info`: where the pipeline's parts are.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Info {
    /// The orchestrator's version.
    pub version: String,
    /// The build: package version and target.
    pub build: String,
    /// Where clients connect.
    pub websocket_url: String,
    /// Every worker.
    pub workers: Vec<WorkerInfo>,
    /// The Redis server of the registry and phrase cache, when one is used
    /// (without its password).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_read_back_and_unknown_statuses_are_tolerated() {
        let ready = Readiness {
            status: ReadyStatus::Degraded,
            checks: BTreeMap::from([(
                "redis".to_owned(),
                Check {
                    status: CheckStatus::Warn,
                    latency_ms: 1.5,
                    detail: "down".into(),
                },
            )]),
            workers: vec![WorkerState {
                url: "http://w:1".into(),
                breaker: "open".into(),
                ..WorkerState::default()
            }],
            fault_injection: vec![FaultEntry {
                component: "worker".into(),
                kind: "slowdown".into(),
                params: Map::from_iter([("factor".to_owned(), Value::from(4.0))]),
                ..FaultEntry::default()
            }],
        };
        let json = serde_json::to_value(&ready).expect("json");
        assert_eq!(json["status"], "degraded");
        assert_eq!(json["checks"]["redis"]["status"], "warn");
        assert_eq!(json["fault_injection"][0]["factor"], 4.0);
        assert!(json["workers"][0].get("problem").is_none());
        assert_eq!(
            serde_json::from_value::<Readiness>(json).expect("reads"),
            ready
        );
        let odd: Readiness =
            serde_json::from_str(r#"{"status":"sleepy","extra":1}"#).expect("tolerant");
        assert_eq!(odd.status, ReadyStatus::Unknown);
        let info: Info = serde_json::from_str(r#"{"websocket_url":"ws://h/ws"}"#).expect("info");
        assert_eq!(info.websocket_url, "ws://h/ws");
        assert!(info.workers.is_empty() && info.redis_url.is_none());
    }
}
