//! The orchestrator as a whole: its state, the two listeners' routes, and
//! the shutdown that drains them.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tts_telemetry::MetricsHandle;
use tts_telemetry::faults::{Component, Faults};
use tts_telemetry::listener::{self, Gate, Ticket};

use crate::admission::Admission;
use crate::app::App;
use crate::config::{Cli, OrchestratorConfig};
use crate::error::OrchestratorError;
use crate::metrics::{self, RelayStats};
use crate::pool::{self, Pool};
use crate::{admin, cache, http, registry, relay, security, session};

/// A configured orchestrator, ready to serve.
pub struct Orchestrator {
    config: OrchestratorConfig,
    pool: Arc<Pool>,
    stats: Arc<RelayStats>,
    metrics: Option<MetricsHandle>,
    faults: Arc<Faults>,
}

impl Orchestrator {
    /// Validates `config` and prepares a lazy gRPC channel to the worker
    /// (no connection is made until the first request or health check).
    pub fn new(config: OrchestratorConfig) -> Result<Self, OrchestratorError> {
        config.validate().map_err(OrchestratorError::Config)?;
        let pool = Pool::new(pool::Settings {
            connect_timeout: Duration::from_secs_f64(config.worker_connect_timeout_secs),
            stream_window: config.grpc_stream_window_bytes,
            tls: security::worker_tls(&config)?,
            auth: security::bearer(config.worker_auth_token.as_deref()),
            breaker_failures: config.breaker_failures,
            breaker_cooldown: Duration::from_secs_f64(config.breaker_cooldown_secs),
            poll: Duration::from_millis(config.worker_poll_ms),
        });
        for url in config.static_workers() {
            pool.add(&url, None).map_err(OrchestratorError::Config)?;
        }
        Ok(Self {
            pool: Arc::new(pool),
            faults: config.admin.faults(&[Component::Orchestrator]),
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

    /// Applies faults from this registry (one shared with an embedded
    /// worker, or a test's) instead of the one the flags built.
    pub fn with_faults(mut self, faults: Arc<Faults>) -> Self {
        self.faults = faults;
        self
    }

    /// The relay's in-process counters.
    pub fn stats(&self) -> Arc<RelayStats> {
        Arc::clone(&self.stats)
    }

    /// Serves WebSocket clients on `ws` (path `/ws`) and the admin routes on
    /// `admin` until `shutdown` resolves. Then it stops accepting, reports
    /// not ready, lets requests in flight finish for up to `grace`, answers
    /// what is left with `shutting_down` and closes connections with code
    /// 1001; the admin listener closes last.
    pub async fn serve(
        self,
        ws: TcpListener,
        admin: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> Result<(), OrchestratorError> {
        let stop = CancellationToken::new();
        metrics::started();
        self.faults.describe();
        let shared = self.shared(stop.clone());
        let ws_app = self.client_routes(Arc::clone(&shared));
        let admin_app = self.admin_routes(ws.local_addr()?, stop.clone());
        info!(ws = %ws.local_addr()?, admin = %admin.local_addr()?,
            workers = %self.config.static_workers().join(","), "orchestrator listening");
        let tls = security::acceptor(&self.config)?;
        let done = CancellationToken::new();
        let admin_gate = Gate::new(self.config.admin.limits(), listener::admin_refused);
        let admin_server = tokio::spawn(listener::serve(
            admin,
            admin_app,
            admin_gate.clone(),
            None,
            done.clone(),
        ));
        // Clients wait in the listen queue until the registry's first read.
        self.spawn_watchers(&stop, &done).await;
        tokio::spawn(shared.admission.pruning(done.clone()));
        let gate = Gate::new(self.config.client_limits(), metrics::connection_refused);
        let accepting = tokio::spawn(listener::serve(ws, ws_app, gate.clone(), tls, stop.clone()));
        shutdown.await;
        info!("shutting down: no new connections, draining requests");
        stop.cancel();
        let _ = accepting.await;
        drain(&gate, &shared, grace).await;
        done.cancel();
        if let Err(e) = admin_server.await {
            warn!(error = %e, "admin listener task failed");
        }
        // Requests in flight on the admin listener (a scrape) finish.
        let _ = tokio::time::timeout(session::CLOSE_FLUSH_LIMIT, admin_gate.closed()).await;
        Ok(())
    }

    /// What every client connection and HTTP request shares.
    fn shared(&self, stop: CancellationToken) -> Arc<App> {
        Arc::new(App {
            admission: Admission::new(&self.config, stop.clone()),
            relay: Arc::new(relay::RelayContext {
                pool: Arc::clone(&self.pool),
                cache: cache::Settings::from_config(&self.config).map(cache::PhraseCache::new),
                stats: Arc::clone(&self.stats),
                first_frame_timeout: self.config.first_frame_timeout(),
                dead_air_ms: self.config.dead_air_ms,
                progress_timeout: Duration::from_secs_f64(self.config.progress_timeout_secs),
                stalled_timeout: Duration::from_secs_f64(self.config.stalled_stream_secs),
                opus_bitrate: self.config.opus_bitrate,
                faults: Arc::clone(&self.faults),
            }),
            config: self.config.clone(),
            stats: Arc::clone(&self.stats),
            shutdown: stop,
            force: CancellationToken::new(),
        })
    }

    /// The client listener: the WebSocket, the speech endpoint, the page.
    fn client_routes(&self, shared: Arc<App>) -> Router {
        Router::new()
            .route("/ws", get(ws_handler))
            .route("/v1/audio/speech", axum::routing::post(http::speech))
            .route("/v1/voices", get(http::voices))
            .route("/v1/models", get(http::models))
            .route("/", get(http::page))
            .route("/player-worklet.js", get(http::worklet))
            .fallback(http::not_found)
            .method_not_allowed_fallback(http::method_not_allowed)
            .with_state(shared)
    }

    /// The admin listener: health, readiness, the pipeline's map, metrics,
    /// faults and profiles.
    fn admin_routes(&self, ws_addr: SocketAddr, draining: CancellationToken) -> Router {
        let state = Arc::new(admin::AdminState {
            pool: Arc::clone(&self.pool),
            config: self.config.clone(),
            stats: Arc::clone(&self.stats),
            metrics: self.metrics.clone(),
            canary: tokio::sync::Mutex::new(None),
            draining,
            ws_addr,
            ws_tls: self.config.tls_cert.is_some(),
            faults: Arc::clone(&self.faults),
            redis: tokio::sync::OnceCell::new(),
        });
        Router::new()
            .route("/health", get(admin::health))
            .route("/ready", get(admin::ready))
            .route("/info", get(admin::info))
            .route("/metrics", get(admin::metrics))
            .with_state(state)
            .merge(tts_telemetry::faults::routes(Arc::clone(&self.faults)))
            .merge(tts_telemetry::profile::routes(&self.config.admin))
    }

    /// The workers' load polls, the readiness gauges and, with Redis, the
    /// registry, each until `done`; returns once the registry has been read
    /// (or for too long).
    async fn spawn_watchers(&self, stop: &CancellationToken, done: &CancellationToken) {
        tokio::spawn(Arc::clone(&self.pool).watch(done.clone()));
        tokio::spawn(admin::watch(
            Arc::clone(&self.pool),
            stop.clone(),
            done.clone(),
        ));
        if let Some(url) = &self.config.redis_url {
            // The patterns were checked with the other flags.
            let allow = self.config.registry_patterns().unwrap_or_default();
            let mut registry = registry::Registry::new(url.clone(), Arc::clone(&self.pool), allow);
            registry.first_read(registry::FIRST_READ_LIMIT).await;
            tokio::spawn(registry.follow(done.clone()));
        }
    }
}

/// Waits up to `grace` for every connection to close; then ends what is
/// left with `shutting_down` and waits for those last messages to flush.
async fn drain(gate: &Gate, shared: &App, grace: Duration) {
    if tokio::time::timeout(grace, gate.closed()).await.is_err() {
        warn!(
            grace_secs = grace.as_secs_f64(),
            open = gate.open(),
            "grace period over; ending what is left with shutting_down"
        );
        shared.force.cancel();
        let _ = tokio::time::timeout(session::CLOSE_FLUSH_LIMIT, gate.closed()).await;
    }
}

/// Binds both listeners of `cli` and serves until SIGTERM or SIGINT, then
/// drains for the grace period. `faults`: a fault registry shared with an
/// embedded worker (`tts-pipeline`); by default one from the flags.
pub async fn run(
    cli: Cli,
    metrics: MetricsHandle,
    faults: Option<Arc<Faults>>,
) -> Result<(), OrchestratorError> {
    let mut orchestrator = Orchestrator::new(cli.relay)?.with_metrics(metrics);
    if let Some(faults) = faults {
        orchestrator = orchestrator.with_faults(faults);
    }
    let ws = bind(cli.listen).await?;
    let admin = bind(cli.admin_listen).await?;
    let grace = Duration::from_secs_f64(cli.shutdown_grace_secs);
    let served = orchestrator
        .serve(ws, admin, tts_telemetry::signal::shutdown(), grace)
        .await;
    tts_telemetry::otel::shutdown();
    served
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, OrchestratorError> {
    TcpListener::bind(addr).await.map_err(|e| {
        OrchestratorError::Io(std::io::Error::new(
            e.kind(),
            format!("binding {addr}: {e}"),
        ))
    })
}

async fn ws_handler(
    upgrade: WebSocketUpgrade,
    State(shared): State<Arc<App>>,
    Extension(ticket): Extension<Ticket>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err((status, reason, body)) =
        security::check_handshake(&shared.config, &headers, query.as_deref())
    {
        metrics::connection_refused(reason);
        tracing::info!(%peer, reason, "handshake refused");
        return (status, body).into_response();
    }
    let trace_hint = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(tts_proto::trace_id_from_traceparent)
        .map(str::to_owned);
    let max = shared.config.max_message_bytes;
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .on_upgrade(move |socket| session::serve(socket, shared, peer.ip(), trace_hint, ticket))
}

/// Bytes a WebSocket reads from its socket at a time (tungstenite's
/// default, 128 KiB, would be most of an idle connection's memory).
const READ_BUFFER_BYTES: usize = 4096;
