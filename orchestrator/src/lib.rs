//! The orchestrator: accepts WebSocket clients, forwards their text to a TTS
//! worker over gRPC, verifies every frame that comes back and relays it,
//! with bounded queues at every hop.
//!
//! # Layout
//! - [`protocol`]: the WebSocket contract's JSON messages.
//! - `session`: one connection (reader loop, writer task, queues).
//! - `relay`: one request's gRPC stream → the connection's queue.
//! - `admin`: `/health`, `/ready` (with the synthesis canary) and `/metrics`.
//! - [`config`]: flags and environment.

pub mod config;
pub mod metrics;
pub mod protocol;

mod admin;
mod relay;
mod session;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};
use tts_proto::v1::tts_client::TtsClient;
use tts_telemetry::MetricsHandle;

pub use config::OrchestratorConfig;
pub use metrics::RelayStats;

/// The orchestrator failed to start or serve.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A listener failed.
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}

/// A configured orchestrator, ready to serve.
pub struct Orchestrator {
    config: OrchestratorConfig,
    channel: Channel,
    stats: Arc<RelayStats>,
    metrics: Option<MetricsHandle>,
}

impl Orchestrator {
    /// Validates `config` and prepares a lazy gRPC channel to the worker
    /// (no connection is made until the first request or health check).
    pub fn new(config: OrchestratorConfig) -> Result<Self, OrchestratorError> {
        config.validate().map_err(OrchestratorError::Config)?;
        let endpoint = Endpoint::from_shared(config.worker_url.clone())
            .map_err(|e| OrchestratorError::Config(format!("--worker: {e}")))?
            .connect_timeout(Duration::from_secs_f64(config.worker_connect_timeout_secs))
            .tcp_nodelay(true)
            .initial_stream_window_size(config.grpc_stream_window_bytes)
            // Data held by stalled streams counts against the connection
            // window, so it must fit many of them.
            .initial_connection_window_size(config.grpc_stream_window_bytes.saturating_mul(512))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        Ok(Self {
            channel: endpoint.connect_lazy(),
            config,
            stats: Arc::new(RelayStats::default()),
            metrics: None,
        })
    }

    /// Serves `/metrics` from this Prometheus recorder.
    pub fn with_metrics(mut self, handle: MetricsHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    /// The relay's in-process counters.
    pub fn stats(&self) -> Arc<RelayStats> {
        Arc::clone(&self.stats)
    }

    /// Serves WebSocket clients on `ws` (path `/ws`) and the admin routes on
    /// `admin` until `shutdown` resolves. Then it stops accepting, lets
    /// requests in flight finish for up to `grace`, and closes connections
    /// with code 1001.
    pub async fn serve(
        self,
        ws: TcpListener,
        admin: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> Result<(), OrchestratorError> {
        let stop = CancellationToken::new();
        metrics::started();
        let client = TtsClient::new(self.channel.clone()).max_decoding_message_size(64 * 1024);
        let shared = Arc::new(session::Shared {
            relay: Arc::new(relay::RelayContext {
                client: client.clone(),
                channel: self.channel.clone(),
                stats: Arc::clone(&self.stats),
                first_frame_timeout: self.config.first_frame_timeout(),
                dead_air: Duration::from_millis(self.config.dead_air_ms),
            }),
            config: self.config.clone(),
            stats: Arc::clone(&self.stats),
            inflight: AtomicUsize::new(0),
            shutdown: stop.clone(),
            force: CancellationToken::new(),
        });
        let admin_state = Arc::new(admin::AdminState {
            channel: self.channel.clone(),
            client,
            config: self.config.clone(),
            stats: Arc::clone(&self.stats),
            metrics: self.metrics.clone(),
            canary: tokio::sync::Mutex::new(None),
        });
        let ws_app = Router::new()
            .route("/ws", get(ws_handler))
            .with_state(Arc::clone(&shared));
        let admin_app = Router::new()
            .route("/health", get(admin::health))
            .route("/ready", get(admin::ready))
            .route("/metrics", get(admin::metrics))
            .with_state(admin_state);
        info!(ws = %ws.local_addr()?, admin = %admin.local_addr()?,
            worker = %self.config.worker_url, "orchestrator listening");
        let send_buffer = self.config.ws_send_buffer_bytes;
        let ws = ws.tap_io(move |tcp| {
            let _ = tcp.set_nodelay(true);
            if let Err(e) = socket2::SockRef::from(&*tcp).set_send_buffer_size(send_buffer) {
                warn!(error = %e, "cannot set the socket send buffer");
            }
        });
        let signal = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            info!("shutting down: no new connections, draining requests");
            signal.cancel();
        });
        let drained = stop.clone();
        let ws_server = axum::serve(
            ws,
            ws_app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move { drained.cancelled().await });
        let admin_server = axum::serve(admin, admin_app)
            .with_graceful_shutdown(async move { stop.cancelled().await });
        tokio::try_join!(ws_server.into_future(), admin_server.into_future())?;
        // The listeners are closed; upgraded connections live on. Let their
        // requests finish for up to `grace`, then close them.
        let deadline = tokio::time::Instant::now() + grace;
        while shared
            .stats
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
        {
            if tokio::time::Instant::now() >= deadline {
                warn!(
                    grace_secs = grace.as_secs_f64(),
                    "grace period over; closing what is left"
                );
                shared.force.cancel();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

async fn ws_handler(
    upgrade: WebSocketUpgrade,
    State(shared): State<Arc<session::Shared>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let open = shared
        .stats
        .connections
        .load(std::sync::atomic::Ordering::Relaxed);
    if open >= shared.config.max_connections as u64 {
        warn!(%peer, open, "connection refused: at capacity");
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response();
    }
    let trace_hint = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(tts_worker::service::trace_id_from_traceparent)
        .map(str::to_owned);
    let max = shared.config.max_message_bytes;
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .write_buffer_size(0)
        .on_upgrade(move |socket| session::serve(socket, shared, trace_hint))
}
