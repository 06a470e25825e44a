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
//! - [`text`]: text → clauses.
//! - [`engine`]: Piper (ONNX Runtime) and espeak-ng voices.
//! - [`audio`]: resampling to 48 kHz, limiting, framing with CRC-32C.
//! - [`sched`]: deadline scheduling of synthesis steps, and admission.
//! - [`synth`]: the synthesis threads and each request's paced sender.
//! - [`service`]: the `tts.v1.Tts` gRPC service.
//! - [`metrics`]: every metric the worker records.
//! - [`config`]: flags and environment; `error`: why the worker stops.

pub mod alloc;
pub mod audio;
mod auth;
pub mod config;
mod drain;
pub mod engine;
mod error;
pub mod gpu;
pub mod metrics;
mod registry;
pub mod sched;
pub mod service;
pub mod synth;
pub mod text;
mod tls;
mod watchdog;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{error, info, warn};
use tts_proto::v1::tts_server::TtsServer;

pub use config::{EngineKind, ServerConfig, WorkerConfig};
use drain::Drain;
use engine::{EngineError, EspeakVoice, PiperOptions, PiperVoice, Voice};
pub use error::WorkerError;
use service::{Loaded, LoadedVoices, TtsService};
use synth::{PoolConfig, SynthPool};

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
        let loaded = load_voices(&worker.config)?;
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
        worker_faults(&self.config).describe();
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let health = Health {
            reporter,
            serving: Arc::new(AtomicBool::new(false)),
        };
        health.set(ServingStatus::NotServing).await;
        let draining = Arc::new(AtomicBool::new(false));
        let streams = Drain::new();
        let service = TtsService {
            loaded: Arc::clone(&self.loaded),
            max_text_chars: self.config.max_text_chars,
            stream_queue_frames: self.config.stream_queue_frames,
            draining: Arc::clone(&draining),
            serving: Arc::clone(&health.serving),
            metrics_url: self.server.metrics_url.clone(),
            device: self.config.device,
            gpus: Arc::clone(&self.gpus),
            faults: worker_faults(&self.config),
            drain: streams.clone(),
        };
        let stopping = CancellationToken::new();
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
            tokio::spawn(watch_gpu(
                n,
                self.config.min_gpu_free_mb,
                Arc::clone(&self.gpus),
                Arc::clone(&self.loaded),
                health.clone(),
                stopping.clone(),
            ));
        }
        let notice = Duration::from_secs_f64(self.server.drain_notice_secs);
        let drain = {
            let (stopping, health) = (stopping.clone(), health.clone());
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
        };
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "worker listening");
        }
        let tts =
            TtsServer::with_interceptor(service, auth::Check::new(self.server.auth_token.clone()));
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
                if let Some(loaded) = self.loaded.get() {
                    loaded.pool.force_stop();
                    // Each response stream ends with its status; wait for
                    // the last (a stream whose client is gone may never).
                    let _ = tokio::time::timeout(FORCED_STATUSES, streams.idle()).await;
                }
            }
        }
        // The synthesis threads end, and release their sessions, before
        // the process does.
        if let Some(loaded) = self.loaded.get() {
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
        Ok(())
    }

    /// Loads the voices unless already loaded, then reports SERVING.
    /// Resolves only on failure (success leaves it pending, so that it can
    /// sit in a `select!` beside the server).
    async fn load_in_background(&self, health: Health) -> Result<(), WorkerError> {
        if self.loaded.get().is_none() {
            let config = self.config.clone();
            let loaded = tokio::task::spawn_blocking(move || load_voices(&config))
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

/// Every 5 s until `stop`: refreshes the GPU inventory (metrics,
/// `ListVoices`) and reports NOT_SERVING while the device has less free
/// memory than `min_free_mb` (SERVING again once it has).
async fn watch_gpu(
    device: u32,
    min_free_mb: u64,
    gpus: Arc<std::sync::Mutex<Vec<gpu::GpuInfo>>>,
    loaded: Arc<LoadedVoices>,
    health: Health,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut short = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let seen =
            tokio::task::spawn_blocking(move || gpu::inventory(gpu::Device::Cuda(device))).await;
        let Ok(Ok(seen)) = seen else {
            warn!(device, "cannot read the GPU's state");
            continue;
        };
        metrics::gpus(&seen);
        let free_mb = seen
            .iter()
            .find(|g| g.index == device)
            .map_or(0, |g| g.free_memory_bytes >> 20);
        if let Ok(mut g) = gpus.lock() {
            *g = seen;
        }
        let now_short = free_mb < min_free_mb;
        if now_short != short && loaded.get().is_some() && !stop.is_cancelled() {
            if now_short {
                warn!(device, free_mb, min_free_mb, "GPU memory low: NOT_SERVING");
                health.set(ServingStatus::NotServing).await;
            } else {
                info!(device, free_mb, "GPU memory recovered: SERVING");
                health.set(ServingStatus::Serving).await;
            }
            short = now_short;
        }
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

/// The worker's health as `grpc.health.v1` and `GetLoad` report it, kept
/// in one place so that the two cannot disagree.
#[derive(Clone)]
struct Health {
    reporter: HealthReporter,
    serving: Arc<AtomicBool>,
}

impl Health {
    async fn set(&self, status: ServingStatus) {
        self.serving
            .store(status == ServingStatus::Serving, Ordering::Relaxed);
        self.reporter.set_service_status("", status).await;
        self.reporter
            .set_service_status(HEALTH_SERVICE, status)
            .await;
    }
}

fn load_voices(config: &WorkerConfig) -> Result<Loaded, WorkerError> {
    let started = Instant::now();
    let mut voices: Vec<Arc<dyn Voice>> = Vec::new();
    if let Some(cost) = config.fixed_cost {
        voices.push(Arc::new(engine::FixedCostVoice::new(
            FIXED_COST_VOICE,
            cost,
        )));
    } else if config.engine == EngineKind::Piper {
        let opts = PiperOptions {
            runtime_library: config.onnxruntime.clone(),
            intra_threads: config.intra_threads,
            scales: config.deterministic.then_some([0.0, 1.0, 0.0]),
            streaming: config.stream_in_clause,
            plan: engine::ChunkPlan {
                context: config.decoder_context,
                max: config.max_window_frames,
                // Batches share a call more often when windows share widths.
                uniform: config.decode_batch() > 1,
                ..engine::ChunkPlan::default()
            },
            wide_threads: config.idle_intra_threads,
            device: config.device,
        };
        // The default voice first: a failure to load it stops the worker.
        let model = config
            .voice_dir
            .join(format!("{}.onnx", config.piper_voice));
        voices.push(Arc::new(PiperVoice::load(
            &config.piper_voice,
            &model,
            &opts,
        )?));
        // Every other voice in the directory; one that fails is left out
        // with a warning, and the others serve.
        for (name, model) in piper_models(&config.voice_dir) {
            if name == config.piper_voice {
                continue;
            }
            match PiperVoice::load(&name, &model, &opts) {
                Ok(voice) => voices.push(Arc::new(voice)),
                Err(e) => {
                    metrics::voice_skipped();
                    warn!(voice = %name, error = %e, "voice not loaded; the others serve");
                }
            }
        }
    }
    let mut languages = Vec::new();
    if config.fixed_cost.is_none() {
        let espeak = EspeakVoice::load(ESPEAK_VOICE, "en-us")?;
        languages = espeak.languages().to_vec();
        voices.push(Arc::new(espeak));
    }
    let pool = SynthPool::start(
        &voices,
        PoolConfig {
            policy: config.policy(),
            max_requests: config.max_requests,
            send_ahead: Duration::from_millis(config.send_ahead_ms),
            stalled_after: Duration::from_secs_f64(config.stalled_reader_secs),
            max_audio_secs: config.max_audio_secs,
            faults: worker_faults(config),
            stalled_thread_after: Duration::from_secs_f64(config.stalled_thread_secs),
        },
    )?;
    let took = started.elapsed();
    let names: Vec<&str> = voices.iter().map(|v| v.info().name.as_str()).collect();
    let default_engine = voices[0].info().engine;
    metrics::voices_loaded(default_engine, took);
    for v in &voices {
        metrics::voice_streams(&v.info().name, v.info().streaming);
    }
    info!(voices = ?names, default = names[0], engine = default_engine,
        threads = config.synthesis_threads, load_ms = took.as_millis() as u64, "voices loaded");
    Ok(Loaded {
        voices,
        pool,
        espeak_languages: languages,
    })
}

/// The fault registry the configuration names, or one that never starts
/// a fault.
fn worker_faults(config: &WorkerConfig) -> Arc<tts_telemetry::faults::Faults> {
    config.faults.clone().unwrap_or_else(|| {
        tts_telemetry::faults::Faults::disabled(&[tts_telemetry::faults::Component::Worker])
    })
}

/// The Piper voices in `dir`: each `NAME.onnx` with a `NAME.onnx.json`
/// beside it, by name. A directory that cannot be read has none.
fn piper_models(dir: &std::path::Path) -> Vec<(String, std::path::PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut models: Vec<(String, std::path::PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .filter(|p| std::path::PathBuf::from(format!("{}.json", p.display())).is_file())
        .filter_map(|p| Some((p.file_stem()?.to_str()?.to_owned(), p)))
        .collect();
    models.sort();
    models
}
