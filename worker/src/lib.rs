//! The TTS worker: synthesises speech with a real engine and streams it over
//! gRPC as checksummed 20 ms frames of 48 kHz mono s16le.
//!
//! # Layout
//! - [`text`]: text → clauses.
//! - [`engine`]: Piper (ONNX Runtime) and espeak-ng voices.
//! - [`audio`]: resampling to 48 kHz, limiting, framing with CRC-32C.
//! - [`synth`]: the synthesis thread pool and its bounded queues.
//! - [`service`]: the `tts.v1.Tts` gRPC service.
//! - [`config`]: flags and environment.

pub mod audio;
pub mod config;
pub mod engine;
pub mod metrics;
pub mod service;
pub mod signal;
pub mod synth;
pub mod telemetry;
pub mod text;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::info;
use tts_proto::v1::tts_server::TtsServer;

pub use config::{EngineKind, WorkerConfig};
use engine::{EngineError, EspeakVoice, PiperOptions, PiperVoice, Voice};
use service::TtsService;
use synth::SynthPool;

/// Name of the espeak-ng formant voice.
pub const ESPEAK_VOICE: &str = "espeak-en-us";

/// The worker failed to start or serve.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A voice could not be loaded.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A worker with its voices loaded and synthesis threads running.
pub struct Worker {
    service: TtsService,
    draining: Arc<AtomicBool>,
    grace: std::time::Duration,
}

impl Worker {
    /// Loads the voices and starts the synthesis threads. Blocking: loading
    /// a Piper voice takes about half a second per synthesis thread.
    pub fn load(config: &WorkerConfig) -> Result<Self, WorkerError> {
        config.validate().map_err(WorkerError::Config)?;
        let started = Instant::now();
        let mut voices: Vec<Arc<dyn Voice>> = Vec::new();
        if config.engine == EngineKind::Piper {
            let model = config
                .voice_dir
                .join(format!("{}.onnx", config.piper_voice));
            let opts = PiperOptions {
                runtime_library: config.onnxruntime.clone(),
                intra_threads: config.intra_threads,
                scales: config.deterministic.then_some([0.0, 1.0, 0.0]),
            };
            voices.push(Arc::new(PiperVoice::load(
                &config.piper_voice,
                &model,
                &opts,
            )?));
        }
        voices.push(Arc::new(EspeakVoice::load(ESPEAK_VOICE, "en-us")?));
        let pool = SynthPool::start(&voices, config.synthesis_threads, config.max_requests)?;
        let names: Vec<&str> = voices.iter().map(|v| v.info().name.as_str()).collect();
        info!(voices = ?names, default = names[0], threads = config.synthesis_threads,
            load_ms = started.elapsed().as_millis() as u64, "voices loaded");
        let draining = Arc::new(AtomicBool::new(false));
        Ok(Self {
            service: TtsService {
                voices,
                default_voice: 0,
                pool,
                max_text_chars: config.max_text_chars,
                stream_queue_frames: config.stream_queue_frames,
                draining: Arc::clone(&draining),
            },
            draining,
            grace: std::time::Duration::from_secs(config.shutdown_grace_secs),
        })
    }

    /// Serves gRPC (the Tts service and `grpc.health.v1`) on `listener`
    /// until `shutdown` resolves; then reports NOT_SERVING, refuses new
    /// requests and lets streams in progress finish for up to the
    /// configured grace period before closing them.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), WorkerError> {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter.set_serving::<TtsServer<TtsService>>().await;
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let draining = self.draining;
        let stopping = tokio_util::sync::CancellationToken::new();
        let signalled = stopping.clone();
        let drain = async move {
            shutdown.await;
            signalled.cancel();
            info!("draining: refusing new requests");
            draining.store(true, Ordering::Relaxed);
            reporter.set_not_serving::<TtsServer<TtsService>>().await;
            reporter
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
        };
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "worker listening");
        }
        let server = tonic::transport::Server::builder()
            .add_service(health)
            .add_service(TtsServer::new(self.service))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), drain);
        let grace = self.grace;
        tokio::select! {
            r = server => r?,
            _ = async { stopping.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_secs = grace.as_secs(), "grace period over; closing streams");
            }
        }
        Ok(())
    }
}
