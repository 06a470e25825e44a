//! The TTS worker: synthesises speech with a real engine and streams it over
//! gRPC as checksummed 20 ms frames of 48 kHz mono s16le.
//!
//! # Scheduling
//!
//! Synthesis threads run *steps*, never whole requests: a clause's first
//! step is its text part and first decoder window, each later step one
//! decoder window (with the flow block it needs). Every stream has a
//! playout clock — once its first frame is sent, frame `k` is due at
//! `first_sent + k × 20 ms` — and every step a deadline; threads always
//! take the runnable step with the earliest deadline ([`sched`]). A
//! window's life:
//!
//! ```text
//!  request arrives ──► admission: does every admitted stream, plus this
//!        │             one, still fit threads × efficiency? ── no ──► overloaded
//!        │ yes                                                       (retry_after_ms)
//!        ▼
//!  first step due at arrival + first-audio budget (100 ms)
//!        │
//!        ▼            ┌─────────────────────────────────────────────┐
//!  runnable ◄─────────┤ parked: more than the lookahead (2 s) ahead │
//!        │            │ of the clock, or the reader holds frames up │
//!        │ earliest   └─────────────────────────────────────────────┘
//!        │ deadline            ▲ produced − played > lookahead
//!        ▼                     │
//!  running on a thread ──► frames to the stream's sender ──► put back with
//!        │                      │                            deadline =
//!        │                      ▼                            due(next frame)
//!        │               released at due(k) − send-ahead       − safety margin
//!        │               (1 s); sent after due(k) because
//!        │               synthesis was late = deadline miss
//!        ▼
//!  last window of the last clause: the stream leaves the scheduler;
//!  cancel or disconnect removes it at once, dropping queued work
//! ```
//!
//! When fewer streams are active than there are threads, a first step may
//! use a shared set of sessions with more intra-op threads, so that a
//! lone request gets its first audio sooner.
//!
//! # Layout
//! - [`alloc`]: the C allocator's settings for a worker process.
//! - [`request`]: what a request asks, stated once ([`request::Speech`]).
//! - [`text`]: text → clauses.
//! - [`engine`]: Piper (ONNX Runtime, phonemes from espeak-ng, streaming
//!   inside a clause), espeak-ng and the fixed-cost test voice.
//! - [`audio`]: resampling to 48 kHz, limiting, framing with CRC-32C.
//! - [`sched`]: deadline scheduling of synthesis steps, and admission.
//! - [`synth`]: admission, the synthesis threads and each request's pacer.
//! - [`service`]: the `tts.v1.Tts` gRPC service (its `wire` module is the
//!   only mapping to and from `tts.v1`).
//! - [`metrics`]: every metric the worker records.
//! - [`config`]: flags and environment; `error`: why the worker stops;
//!   [`run`]: the binary's work from flags to exit.
//! - `load` (voices and threads), `health` (gRPC health, the GPU watch),
//!   `drain` (when the last stream has ended), `registry` (Redis).

pub mod alloc;
pub mod audio;
mod auth;
pub mod config;
mod drain;
pub mod engine;
mod error;
pub mod gpu;
mod health;
mod load;
pub mod metrics;
mod registry;
pub mod request;
mod run;
pub mod sched;
pub mod service;
pub mod synth;
pub mod text;
mod tls;
mod watchdog;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tracing::{error, info, warn};
use tts_proto::v1::tts_server::TtsServer;

pub use config::{EngineKind, ServerConfig, WorkerConfig};
use drain::Drain;
use engine::EngineError;
pub use error::WorkerError;
use health::Health;
pub use run::run;
use service::{LoadedVoices, TtsService};

/// Name of the espeak-ng formant voice.
pub const ESPEAK_VOICE: &str = "espeak-en-us";
/// Name of the fixed-cost test voice ([`WorkerConfig::fixed_cost`]).
pub const FIXED_COST_VOICE: &str = "fixed-cost";
/// How long the synthesis threads get at exit to finish their step and
/// release their sessions.
const SESSIONS_RELEASE: Duration = Duration::from_secs(5);
/// How long the streams ended at the end of the grace period get to hand
/// their statuses to the transport.
const FORCED_STATUSES: Duration = Duration::from_millis(300);
pub use tts_proto::HEALTH_SERVICE;

/// A worker: its configuration and, once loaded, its voices.
pub struct Worker {
    config: WorkerConfig,
    server: ServerConfig,
    loaded: Arc<LoadedVoices>,
    /// The GPUs, with `--device cuda` (refreshed while serving).
    gpus: Arc<std::sync::Mutex<Vec<gpu::GpuInfo>>>,
}

impl Worker {
    /// Checks `config`; loads nothing yet ([`serve`](Self::serve) loads the
    /// voices while health reports NOT_SERVING).
    pub fn new(config: WorkerConfig) -> Result<Self, WorkerError> {
        config.validate().map_err(WorkerError::Config)?;
        // A GPU that cannot be used stops the worker here, before any
        // voice loads: there is no silent fallback to the CPU.
        let gpus = gpu::open(config.device)?;
        if let gpu::Device::Cuda(n) = config.device
            && let Some(g) = gpus.iter().find(|g| g.index == n)
        {
            info!(device = %config.device, name = %g.name, compute_capability = %g.compute_capability,
                free_mib = g.free_memory_bytes >> 20, total_mib = g.total_memory_bytes >> 20,
                driver = %g.driver_version, "synthesising on the GPU");
        }
        metrics::gpus(&gpus);
        Ok(Self {
            config,
            server: ServerConfig::default(),
            loaded: Arc::new(LoadedVoices::new()),
            gpus: Arc::new(std::sync::Mutex::new(gpus)),
        })
    }

    /// Serves with these shutdown, authentication and TLS settings
    /// (default: none of either, a 10 s grace).
    pub fn with_server(mut self, server: ServerConfig) -> Result<Self, WorkerError> {
        server.validate().map_err(WorkerError::Config)?;
        self.server = server;
        Ok(self)
    }

    /// Checks `config` and loads the voices now. Blocking: a Piper voice
    /// takes about half a second per synthesis thread.
    pub fn load(config: &WorkerConfig) -> Result<Self, WorkerError> {
        let worker = Self::new(config.clone())?;
        let loaded = load::load_voices(&worker.config)?;
        worker.loaded.set(loaded);
        Ok(worker)
    }

    /// Serves gRPC (the Tts service and `grpc.health.v1`) on `listener`.
    /// Health is NOT_SERVING until the voices are loaded, SERVING after, and
    /// NOT_SERVING again once `shutdown` resolves: then new requests are
    /// refused, the listener stays open for the drain notice so health
    /// checkers see the change, and streams in progress may finish for the
    /// configured grace period. A voice that fails to load ends `serve` with the error.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), WorkerError> {
        metrics::describe();
        load::worker_faults(&self.config).describe();
        let (health, health_service) = Health::start().await;
        let draining = Arc::new(AtomicBool::new(false));
        let streams = Drain::new();
        let stopping = CancellationToken::new();
        let service = self.service(&health, &draining, &streams);
        self.spawn_watchers(&health, &stopping);
        let drain = self.drain_on(shutdown, stopping.clone(), health.clone(), draining);
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "worker listening");
        }
        let tts = tonic::service::interceptor::InterceptedService::new(
            TtsServer::new(service)
                .max_decoding_message_size(max_request_bytes(self.config.max_text_chars)),
            auth::Check::new(self.server.auth_token.clone()),
        );
        let server = tls::configure(tonic::transport::Server::builder(), &self.server)?
            .add_service(health_service)
            .add_service(tts)
            .serve_with_incoming_shutdown(incoming(listener), drain);
        let loading = self.load_in_background(health.clone());
        let grace = Duration::from_secs_f64(self.server.shutdown_grace_secs);
        tokio::select! {
            r = server => r?,
            Err(e) = loading => return Err(e),
            _ = async { stopping.cancelled().await; tokio::time::sleep(grace).await } => {
                warn!(grace_secs = grace.as_secs_f64(), "grace period over; ending streams with worker_unavailable");
                self.force_stop(&streams).await;
            }
        }
        self.close().await;
        Ok(())
    }

    /// The gRPC service over this worker's voices.
    fn service(&self, health: &Health, draining: &Arc<AtomicBool>, streams: &Drain) -> TtsService {
        TtsService {
            loaded: Arc::clone(&self.loaded),
            max_text_chars: self.config.max_text_chars,
            stream_queue_frames: self.config.stream_queue_frames,
            draining: Arc::clone(draining),
            serving: health.serving(),
            metrics_url: self.server.metrics_url.clone(),
            device: self.config.device,
            gpus: Arc::clone(&self.gpus),
            faults: load::worker_faults(&self.config),
            drain: streams.clone(),
        }
    }

    /// The registry heartbeat (with `--redis-url`) and the GPU watch (with
    /// a GPU), until `stopping`.
    fn spawn_watchers(&self, health: &Health, stopping: &CancellationToken) {
        if let (Some(redis), Some(url)) = (&self.server.redis_url, &self.server.advertise_url) {
            tokio::spawn(registry::announce(
                redis.clone(),
                url.clone(),
                Duration::from_secs_f64(self.server.registry_ttl_secs),
                Arc::clone(&self.loaded),
                stopping.clone(),
            ));
        }
        if let gpu::Device::Cuda(n) = self.config.device {
            tokio::spawn(health::watch_gpu(
                n,
                self.config.min_gpu_free_mb,
                Arc::clone(&self.gpus),
                Arc::clone(&self.loaded),
                health.clone(),
                stopping.clone(),
            ));
        }
    }

    /// What the server's shutdown waits for: `shutdown` (or a stop from
    /// inside), then the drain: new requests refused, streams in progress
    /// unpaced, health NOT_SERVING for the drain notice before the
    /// listener closes.
    fn drain_on(
        &self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        stopping: CancellationToken,
        health: Health,
        draining: Arc<AtomicBool>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let notice = Duration::from_secs_f64(self.server.drain_notice_secs);
        let loaded = Arc::clone(&self.loaded);
        async move {
            tokio::select! {
                _ = shutdown => {}
                _ = stopping.cancelled() => {}
            }
            stopping.cancel();
            info!("draining: refusing new requests");
            draining.store(true, Ordering::Relaxed);
            // Streams in progress finish as fast as the machine allows.
            if let Some(loaded) = loaded.get() {
                loaded.pool.drain();
            }
            health.set(ServingStatus::NotServing).await;
            // Keep answering (health says NOT_SERVING, synthesis is
            // refused) so that health checkers see the change before
            // the listener closes.
            tokio::time::sleep(notice).await;
        }
    }

    /// The grace period is over: every stream still in progress ends with
    /// `worker_unavailable`.
    async fn force_stop(&self, streams: &Drain) {
        if let Some(loaded) = self.loaded.get() {
            loaded.pool.force_stop();
            // Each response stream ends with its status; wait for the
            // last (a stream whose client is gone may never).
            let _ = tokio::time::timeout(FORCED_STATUSES, streams.idle()).await;
        }
    }

    /// The synthesis threads end, and release their sessions, before the
    /// process does.
    async fn close(&self) {
        let Some(loaded) = self.loaded.get() else {
            return;
        };
        let pool = Arc::clone(&loaded.pool);
        let closed = tokio::task::spawn_blocking(move || pool.close(SESSIONS_RELEASE))
            .await
            .unwrap_or(false);
        if !closed {
            warn!(
                limit_secs = SESSIONS_RELEASE.as_secs(),
                "synthesis threads still busy at exit"
            );
        }
    }

    /// Loads the voices unless already loaded, then reports SERVING.
    /// Resolves only on failure (success leaves it pending, so that it can
    /// sit in a `select!` beside the server).
    async fn load_in_background(&self, health: Health) -> Result<(), WorkerError> {
        if self.loaded.get().is_none() {
            let config = self.config.clone();
            let loaded = tokio::task::spawn_blocking(move || load::load_voices(&config))
                .await
                .map_err(|e| EngineError::Runtime(format!("loading task: {e}")))?;
            match loaded {
                Ok(loaded) => {
                    self.loaded.set(loaded);
                }
                Err(e) => {
                    error!(error = %e, "cannot load the voices");
                    return Err(e);
                }
            }
        }
        health.set(ServingStatus::Serving).await;
        std::future::pending().await
    }
}

/// Accepted connections with Nagle's algorithm off: frames are small and
/// must leave at once.
fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|tcp| {
            let _ = tcp.set_nodelay(true);
        })
    })
}

/// The largest gRPC message the worker decodes: the longest text it
/// accepts at four bytes a character, and 16 KiB for the other fields
/// (voice, ids, options). Anything larger is refused (`OUT_OF_RANGE`)
/// before it is read into memory, instead of tonic's default of 4 MiB.
pub fn max_request_bytes(max_text_chars: usize) -> usize {
    max_text_chars.saturating_mul(4).saturating_add(16 * 1024)
}
