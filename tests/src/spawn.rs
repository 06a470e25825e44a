//! The real worker and orchestrator, in this process, on ephemeral
//! loopback ports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tts_orchestrator::{Orchestrator, OrchestratorConfig, RelayStats};
use tts_worker::{EngineKind, Worker, WorkerConfig};

use crate::repo_root;

/// Worker settings for tests: the Piper voice, deterministic output.
pub fn worker_config() -> WorkerConfig {
    let root = repo_root();
    WorkerConfig {
        engine: EngineKind::Piper,
        voice_dir: root.join(".cache/voices"),
        onnxruntime: root.join(".cache/onnxruntime/libonnxruntime.so"),
        deterministic: true,
        ..WorkerConfig::default()
    }
}

/// The admin token the tests' fault registries and processes take.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A fault registry that accepts faults (for a worker's or an
/// orchestrator's configuration): what `--allow-fault-injection
/// --admin-token` gives a process.
pub fn fault_registry() -> Arc<tts_telemetry::faults::Faults> {
    use tts_telemetry::faults::{Component, Faults};
    Faults::new(
        &[Component::Worker, Component::Orchestrator],
        true,
        Some(ADMIN_TOKEN.into()),
    )
}

/// A running service: its address, its stop switch and its task.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    /// Signals the service to shut down, without waiting.
    pub fn signal_stop(&self) {
        self.stop.cancel();
    }

    /// Waits (up to `limit`) for the service to end; returns whether it did.
    pub async fn join(self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.task).await.is_ok()
    }

    /// Stops the service and waits for it to end.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }
}

/// Starts a worker on `127.0.0.1:0`.
pub async fn spawn_worker(config: WorkerConfig) -> Running {
    let worker = tokio::task::spawn_blocking(move || Worker::load(&config))
        .await
        .expect("join")
        .expect("worker loads (run scripts/setup.sh first)");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    spawn_worker_on(worker, listener)
}

/// Serves a loaded worker on `listener`.
pub fn spawn_worker_on(worker: Worker, listener: TcpListener) -> Running {
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        let _ = worker
            .serve(listener, async move { token.cancelled().await })
            .await;
    });
    Running { addr, stop, task }
}

/// A running orchestrator.
pub struct Pipeline {
    /// `ws://…/ws`.
    pub ws_url: String,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The relay's counters.
    pub stats: Arc<RelayStats>,
    /// The orchestrator itself.
    pub orchestrator: Running,
}

/// Starts an orchestrator relaying to `worker_url`.
pub async fn spawn_orchestrator(worker_url: String, config: OrchestratorConfig) -> Pipeline {
    spawn_orchestrator_metered(worker_url, config, None).await
}

/// Starts an orchestrator whose shutdown grace period is `grace`.
pub async fn spawn_orchestrator_with_grace(
    worker_url: String,
    config: OrchestratorConfig,
    grace: Duration,
) -> Pipeline {
    start_orchestrator(worker_url, config, None, grace).await
}

/// Starts an orchestrator that serves `/metrics` from `metrics`.
pub async fn spawn_orchestrator_metered(
    worker_url: String,
    config: OrchestratorConfig,
    metrics: Option<tts_telemetry::MetricsHandle>,
) -> Pipeline {
    start_orchestrator(worker_url, config, metrics, Duration::from_secs(5)).await
}

async fn start_orchestrator(
    worker_url: String,
    mut config: OrchestratorConfig,
    metrics: Option<tts_telemetry::MetricsHandle>,
    grace: Duration,
) -> Pipeline {
    config.workers = vec![worker_url];
    let mut orchestrator = Orchestrator::new(config).expect("valid config");
    if let Some(handle) = metrics {
        orchestrator = orchestrator.with_metrics(handle);
    }
    let stats = orchestrator.stats();
    let ws = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (ws_addr, admin_addr) = (
        ws.local_addr().expect("addr"),
        admin.local_addr().expect("addr"),
    );
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        let shutdown = async move { token.cancelled().await };
        let _ = orchestrator.serve(ws, admin, shutdown, grace).await;
    });
    Pipeline {
        ws_url: format!("ws://{ws_addr}/ws"),
        admin: admin_addr,
        stats,
        orchestrator: Running {
            addr: ws_addr,
            stop,
            task,
        },
    }
}

/// Worker and orchestrator with default settings.
pub async fn spawn_pipeline() -> (Running, Pipeline) {
    let worker = spawn_worker(worker_config()).await;
    let pipeline = spawn_orchestrator(
        format!("http://{}", worker.addr),
        OrchestratorConfig::default(),
    )
    .await;
    (worker, pipeline)
}

/// A worker and an orchestrator with these settings, the orchestrator
/// serving this process's metrics (the recorder is installed here: once
/// per test binary).
pub async fn spawn_metered_pipeline(
    worker: WorkerConfig,
    orchestrator: OrchestratorConfig,
) -> (tts_telemetry::MetricsHandle, Running, Pipeline) {
    let metrics = tts_telemetry::install_metrics().expect("recorder");
    let worker = spawn_worker(worker).await;
    let pipeline = spawn_orchestrator_metered(
        format!("http://{}", worker.addr),
        orchestrator,
        Some(metrics.clone()),
    )
    .await;
    (metrics, worker, pipeline)
}
