//! Orchestrator configuration: flags with `TTS_*` environment mirrors,
//! checked before anything binds.

use std::net::SocketAddr;
use std::time::Duration;

/// What the relay needs to know; everything has a documented default.
#[derive(Debug, Clone, clap::Args)]
pub struct OrchestratorConfig {
    /// The worker's gRPC address.
    #[arg(
        long = "worker",
        env = "TTS_WORKER_URL",
        default_value = "http://127.0.0.1:7001"
    )]
    pub worker_url: String,

    /// Longest accepted text, in characters.
    #[arg(long, env = "TTS_MAX_TEXT_CHARS", default_value_t = 5000)]
    pub max_text_chars: usize,

    /// Frames queued for one connection's socket, all its requests together
    /// (50 = 1 s of audio). When full, the orchestrator stops reading the
    /// worker's streams for that connection.
    #[arg(long, env = "TTS_CLIENT_QUEUE_FRAMES", default_value_t = 50)]
    pub client_queue_frames: usize,

    /// Requests in flight on one connection; more get `overloaded`.
    #[arg(long, env = "TTS_MAX_REQUESTS_PER_CONNECTION", default_value_t = 4)]
    pub max_requests_per_connection: usize,

    /// Requests in flight in the whole process; more get `overloaded`.
    #[arg(long, env = "TTS_MAX_INFLIGHT", default_value_t = 512)]
    pub max_inflight: usize,

    /// Open WebSocket connections; more are refused with HTTP 503.
    #[arg(long, env = "TTS_MAX_CONNECTIONS", default_value_t = 2048)]
    pub max_connections: usize,

    /// Largest client message accepted, in bytes; a larger one closes the
    /// connection (close code 1009).
    #[arg(long, env = "TTS_MAX_MESSAGE_BYTES", default_value_t = 65_536)]
    pub max_message_bytes: usize,

    /// Kernel send buffer of each WebSocket socket, in bytes (fixed, so
    /// that the application queue, not the kernel, absorbs a slow reader).
    #[arg(long, env = "TTS_WS_SEND_BUFFER_BYTES", default_value_t = 65_536)]
    pub ws_send_buffer_bytes: usize,

    /// HTTP/2 stream window towards the worker, in bytes (65,536 ≈ 33
    /// frames). Bounds what one request can buffer between the processes.
    #[arg(long, env = "TTS_GRPC_STREAM_WINDOW_BYTES", default_value_t = 65_536)]
    pub grpc_stream_window_bytes: u32,

    /// Seconds to wait for a request's first frame before answering
    /// `worker_unavailable`.
    #[arg(long, env = "TTS_FIRST_FRAME_TIMEOUT_SECS", default_value_t = 15.0)]
    pub first_frame_timeout_secs: f64,

    /// Seconds to connect to the worker.
    #[arg(long, env = "TTS_WORKER_CONNECT_TIMEOUT_SECS", default_value_t = 1.0)]
    pub worker_connect_timeout_secs: f64,

    /// A request whose frames stay silent for longer than this many
    /// milliseconds while streaming is counted and logged as dead air.
    #[arg(long, env = "TTS_DEAD_AIR_MS", default_value_t = 2000)]
    pub dead_air_ms: u64,

    /// Optional Redis server checked by `/ready` (e.g. `redis://127.0.0.1:6379`).
    #[arg(long, env = "TTS_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Seconds a `/ready?deep=1` canary result is reused.
    #[arg(long, env = "TTS_CANARY_CACHE_SECS", default_value_t = 30.0)]
    pub canary_cache_secs: f64,

    /// `/ready` reports `degraded` below this much free disk, in MiB.
    #[arg(long, env = "TTS_MIN_FREE_DISK_MB", default_value_t = 512)]
    pub min_free_disk_mb: u64,

    /// `/ready` reports `degraded` below this much available memory, in MiB.
    #[arg(long, env = "TTS_MIN_AVAILABLE_MEMORY_MB", default_value_t = 256)]
    pub min_available_memory_mb: u64,

    /// Consecutive bad messages after which a connection is closed.
    #[arg(long, env = "TTS_MAX_BAD_MESSAGES", default_value_t = 32)]
    pub max_bad_messages: u32,
}

impl OrchestratorConfig {
    /// Checks values that flags' types cannot.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.worker_url.starts_with("http://") || self.worker_url.starts_with("https://")) {
            return Err(format!(
                "--worker {:?} must be an http:// URL",
                self.worker_url
            ));
        }
        for (name, value) in [
            ("--max-text-chars", self.max_text_chars),
            ("--client-queue-frames", self.client_queue_frames),
            (
                "--max-requests-per-connection",
                self.max_requests_per_connection,
            ),
            ("--max-inflight", self.max_inflight),
            ("--max-connections", self.max_connections),
            ("--max-message-bytes", self.max_message_bytes),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.grpc_stream_window_bytes < 4096 {
            return Err("--grpc-stream-window-bytes must be at least 4096".into());
        }
        for (name, secs) in [
            ("--first-frame-timeout-secs", self.first_frame_timeout_secs),
            (
                "--worker-connect-timeout-secs",
                self.worker_connect_timeout_secs,
            ),
        ] {
            if !(secs.is_finite() && secs > 0.0) {
                return Err(format!("{name} must be a positive number"));
            }
        }
        Ok(())
    }

    /// [`first_frame_timeout_secs`](Self::first_frame_timeout_secs) as a duration.
    pub fn first_frame_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.first_frame_timeout_secs)
    }
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            config: OrchestratorConfig,
        }
        // Parsing no arguments yields exactly the documented defaults.
        match Defaults::try_parse_from(["defaults"]) {
            Ok(d) => d.config,
            Err(e) => panic!("default configuration does not parse: {e}"),
        }
    }
}

/// The `tts-orchestrator` command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "tts-orchestrator",
    version,
    about = "WebSocket front end for TTS workers"
)]
pub struct Cli {
    /// WebSocket listen address (the socket is at path `/ws`).
    #[arg(long, env = "TTS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Admin HTTP listen address (`/health`, `/metrics`).
    #[arg(long, env = "TTS_ADMIN_LISTEN", default_value = "127.0.0.1:8081")]
    pub admin_listen: SocketAddr,

    /// Run a worker inside this process on an ephemeral loopback port and
    /// relay to it over gRPC (ignores `--worker`).
    #[arg(long, env = "TTS_EMBEDDED_WORKER")]
    pub embedded_worker: bool,

    /// Log format: `json` (one object per line) or `text`.
    #[arg(long, env = "TTS_LOG_FORMAT", default_value = "json")]
    pub log_format: String,

    /// Export request spans over OTLP/gRPC to this collector, e.g.
    /// `http://127.0.0.1:4317` (needs a build with `--features otel`).
    #[arg(long, env = "TTS_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Relay settings.
    #[command(flatten)]
    pub relay: OrchestratorConfig,

    /// Settings of the embedded worker (with `--embedded-worker`).
    #[command(flatten, next_help_heading = "Embedded worker")]
    pub worker: tts_worker::WorkerConfig,
}
