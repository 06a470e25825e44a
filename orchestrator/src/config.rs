//! Orchestrator configuration: flags with `TTS_*` environment mirrors,
//! checked before anything binds.

use std::net::SocketAddr;
use std::time::Duration;

/// The worker used when none is given.
pub const DEFAULT_WORKER: &str = "http://127.0.0.1:7001";

/// What the relay needs to know; everything has a documented default.
#[derive(Debug, Clone, clap::Args)]
pub struct OrchestratorConfig {
    /// A worker's gRPC address; repeatable (or comma-separated in the
    /// environment). Requests go to the least-loaded one that serves.
    /// Without it (and without `--redis-url`): `http://127.0.0.1:7001`.
    #[arg(long = "worker", env = "TTS_WORKER_URL", value_delimiter = ',')]
    pub workers: Vec<String>,

    /// Milliseconds between load polls of each worker (`GetLoad`): how
    /// fresh routing's view of load and health is.
    #[arg(long, env = "TTS_WORKER_POLL_MS", default_value_t = 500,
        value_parser = clap::value_parser!(u64).range(50..=600_000))]
    pub worker_poll_ms: u64,

    /// Consecutive failed requests after which a worker's circuit breaker
    /// opens (no requests go to it until a probe succeeds).
    #[arg(long, env = "TTS_BREAKER_FAILURES", default_value_t = 3)]
    pub breaker_failures: u32,

    /// Seconds an open breaker waits before letting one probe request
    /// through.
    #[arg(long, env = "TTS_BREAKER_COOLDOWN_SECS", default_value_t = 5.0)]
    pub breaker_cooldown_secs: f64,

    /// Longest accepted text, in characters.
    #[arg(long, env = "TTS_MAX_TEXT_CHARS", default_value_t = 5000)]
    pub max_text_chars: usize,

    /// Frames queued for one connection's socket, all its requests together
    /// (50 = 1 s of audio). When full, the orchestrator stops reading the
    /// worker's streams for that connection.
    #[arg(long, env = "TTS_CLIENT_QUEUE_FRAMES", default_value_t = 50)]
    pub client_queue_frames: usize,

    /// Requests in flight on one connection; more get `rate_limited`.
    #[arg(long, env = "TTS_MAX_REQUESTS_PER_CONNECTION", default_value_t = 4)]
    pub max_requests_per_connection: usize,

    /// Requests in flight in the whole process; more get `overloaded`.
    #[arg(long, env = "TTS_MAX_INFLIGHT", default_value_t = 512)]
    pub max_inflight: usize,

    /// Characters of text in flight on one connection (≈ 0.065 s of audio
    /// each); a request beyond it gets `rate_limited`.
    #[arg(long, env = "TTS_MAX_CONNECTION_CHARS", default_value_t = 10_000)]
    pub max_connection_chars: usize,

    /// Requests per second from one client address (bursts of twice as
    /// many); more get `rate_limited` with `retry_after_ms`.
    #[arg(
        long,
        env = "TTS_REQUESTS_PER_SECOND_PER_ADDRESS",
        default_value_t = 20
    )]
    pub requests_per_second_per_address: u32,

    /// Seconds a connection may stay open with nothing in flight and no
    /// message from the client; then it is closed with code 1000.
    #[arg(long, env = "TTS_IDLE_TIMEOUT_SECS", default_value_t = 120.0)]
    pub idle_timeout_secs: f64,

    /// Seconds a request may wait for its client to take a frame; then it
    /// ends with `client_too_slow` and frees its worker slot.
    #[arg(long, env = "TTS_STALLED_STREAM_SECS", default_value_t = 10.0)]
    pub stalled_stream_secs: f64,

    /// Seconds without a frame from the worker, on a real-time stream
    /// whose client keeps up, after which the worker counts as lost
    /// (`worker_unavailable`).
    #[arg(long, env = "TTS_PROGRESS_TIMEOUT_SECS", default_value_t = 2.0)]
    pub progress_timeout_secs: f64,

    /// Open client connections, handshakes included (capped further at
    /// the file-descriptor limit less 256); more are closed at once.
    #[arg(long, env = "TTS_MAX_CONNECTIONS", default_value_t = 2048)]
    pub max_connections: usize,

    /// Open client connections from one address; more are closed at once.
    #[arg(long, env = "TTS_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 64)]
    pub max_connections_per_address: usize,

    /// Seconds a new connection has to send its HTTP request headers (the
    /// WebSocket handshake) before it is closed; also the longest an HTTP
    /// keep-alive connection may sit idle between requests.
    #[arg(long, env = "TTS_HANDSHAKE_TIMEOUT_SECS", default_value_t = 10.0)]
    pub handshake_timeout_secs: f64,

    /// Seconds an HTTP request's body (`POST /v1/audio/speech`) has to
    /// arrive in full, from the end of its headers; a body still arriving
    /// is answered 408 and the connection closed. At the 64 KiB body limit
    /// the default asks for at least 6.4 KiB/s.
    #[arg(long, env = "TTS_BODY_TIMEOUT_SECS", default_value_t = 10.0)]
    pub body_timeout_secs: f64,

    /// Seconds a client connection's socket may accept no bytes while the
    /// server has some to send (a client that stopped reading); then the
    /// connection is closed, WebSocket or HTTP.
    #[arg(long, env = "TTS_WRITE_TIMEOUT_SECS", default_value_t = 30.0)]
    pub write_timeout_secs: f64,

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

    /// Silence inside a request longer than this many milliseconds is a
    /// `dead_air` quality event (the pauses between words and sentences of
    /// clean speech last at most about 300 ms).
    #[arg(long, env = "TTS_DEAD_AIR_MS", default_value_t = 500)]
    pub dead_air_ms: u32,

    /// Optional Redis server checked by `/ready` (e.g. `redis://127.0.0.1:6379`).
    #[arg(long, env = "TTS_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Worker URLs the registry in Redis may add to the pool, as patterns
    /// (`*` matches any run of characters: `http://worker-*:7001`,
    /// `http://10.0.*:7001`), comma-separated. A registry entry that
    /// matches none is refused and logged: being able to write to Redis
    /// is not enough to receive users' text or the worker token. Empty
    /// (the default): no registry worker is used.
    #[arg(long, env = "TTS_REGISTRY_ALLOW", value_delimiter = ',')]
    pub registry_allow: Vec<String>,

    /// Keep completed phrases' audio in Redis (needs `--redis-url`) and
    /// replay it when the same phrase (voice, options, text) is asked
    /// again.
    #[arg(long, env = "TTS_PHRASE_CACHE")]
    pub phrase_cache: bool,

    /// Seconds a cached phrase is kept.
    #[arg(long, env = "TTS_PHRASE_CACHE_TTL_SECS", default_value_t = 86_400)]
    pub phrase_cache_ttl_secs: u64,

    /// Bytes of cached audio in all (48 kHz PCM: 96,000 per second); the
    /// entries closest to expiry are evicted to stay within it. One
    /// phrase may take at most a quarter.
    #[arg(long, env = "TTS_PHRASE_CACHE_MAX_BYTES", default_value_t = 67_108_864)]
    pub phrase_cache_max_bytes: u64,

    /// Longest text cached, in characters.
    #[arg(long, env = "TTS_PHRASE_CACHE_MAX_CHARS", default_value_t = 200)]
    pub phrase_cache_max_chars: usize,

    /// Part of every cache key (besides the voice's revision, which the
    /// workers report): change it to drop every cached phrase at once.
    #[arg(long, env = "TTS_PHRASE_CACHE_NAMESPACE", default_value = "1")]
    pub phrase_cache_namespace: String,

    /// Seconds a `/ready?deep=1` canary result is reused.
    #[arg(long, env = "TTS_CANARY_CACHE_SECS", default_value_t = 30.0)]
    pub canary_cache_secs: f64,

    /// `/ready` reports `degraded` below this much free disk, in MiB.
    #[arg(long, env = "TTS_MIN_FREE_DISK_MB", default_value_t = 512)]
    pub min_free_disk_mb: u64,

    /// `/ready` reports `degraded` below this much available memory, in MiB.
    #[arg(long, env = "TTS_MIN_AVAILABLE_MEMORY_MB", default_value_t = 256)]
    pub min_available_memory_mb: u64,

    /// Require `Authorization: Bearer TOKEN` on the WebSocket handshake
    /// (compared in constant time); refused with HTTP 401 otherwise.
    #[arg(long, env = "TTS_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,

    /// Also accept the token as the `token` query parameter (`/ws?token=`),
    /// for browsers, which cannot set headers on a WebSocket. Query strings
    /// end up in logs and histories: prefer the header.
    #[arg(long, env = "TTS_AUTH_QUERY_PARAM")]
    pub auth_query_param: bool,

    /// A browser origin (`https://app.example`) allowed to open WebSockets;
    /// repeatable, `*` for any. By default only pages from the server's own
    /// host may; a handshake with another `Origin` is refused with 403
    /// (clients that send no `Origin`, i.e. not browsers, are not
    /// affected).
    #[arg(
        long = "allowed-origin",
        env = "TTS_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Serve the client listener over TLS (`wss://`, `https://`) with this
    /// certificate chain (PEM); needs `--tls-key`.
    #[arg(long, env = "TTS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The client listener's TLS private key (PEM).
    #[arg(long, env = "TTS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Bearer token sent to the worker on every synthesis call.
    #[arg(long, env = "TTS_WORKER_AUTH_TOKEN", hide_env_values = true)]
    pub worker_auth_token: Option<String>,

    /// CA certificate (PEM) that signs the worker's certificate, for an
    /// `https://` worker URL.
    #[arg(long, env = "TTS_WORKER_CA")]
    pub worker_ca: Option<std::path::PathBuf>,

    /// Client certificate (PEM) presented to a worker that requires one;
    /// needs `--worker-client-key`.
    #[arg(long, env = "TTS_WORKER_CLIENT_CERT", requires = "worker_client_key")]
    pub worker_client_cert: Option<std::path::PathBuf>,

    /// The client certificate's private key (PEM).
    #[arg(long, env = "TTS_WORKER_CLIENT_KEY", requires = "worker_client_cert")]
    pub worker_client_key: Option<std::path::PathBuf>,

    /// Consecutive bad messages after which a connection is closed.
    #[arg(long, env = "TTS_MAX_BAD_MESSAGES", default_value_t = 32)]
    pub max_bad_messages: u32,

    /// A context's text without a clause ending is spoken after this many
    /// milliseconds without a new piece.
    #[arg(long, env = "TTS_CONTEXT_IDLE_MS", default_value_t = 800)]
    pub context_idle_ms: u64,

    /// Opus bitrate for clients that ask for `encoding: "opus"`, bits per
    /// second (6,000 to 510,000).
    #[arg(long, env = "TTS_OPUS_BITRATE", default_value_t = 32_000,
        value_parser = clap::value_parser!(u32).range(6_000..=510_000))]
    pub opus_bitrate: u32,

    /// Fault injection and profiling on the admin listener.
    #[command(flatten)]
    pub admin: tts_telemetry::AdminConfig,
}

impl OrchestratorConfig {
    /// Checks values that flags' types cannot.
    pub fn validate(&self) -> Result<(), String> {
        self.admin.validate()?;
        self.validate_workers()?;
        if self.phrase_cache && self.redis_url.is_none() {
            return Err("--phrase-cache needs --redis-url".into());
        }
        if self.phrase_cache_ttl_secs == 0 || self.phrase_cache_max_bytes < 65_536 {
            return Err(
                "--phrase-cache-ttl-secs must be at least 1 and --phrase-cache-max-bytes at least 65536"
                    .into(),
            );
        }
        if let Err(e) = self.registry_patterns() {
            return Err(format!("--registry-allow: {e}"));
        }
        if self.breaker_failures == 0 {
            return Err("--breaker-failures must be at least 1".into());
        }
        self.validate_counts()?;
        for (name, token) in [
            ("--auth-token", &self.auth_token),
            ("--worker-auth-token", &self.worker_auth_token),
        ] {
            if token.as_deref() == Some("") {
                return Err(format!("{name} must not be empty"));
            }
        }
        if self.grpc_stream_window_bytes < 4096 {
            return Err("--grpc-stream-window-bytes must be at least 4096".into());
        }
        self.validate_durations()
    }

    /// Worker URLs: `http://`, or `https://` with a CA to check them.
    fn validate_workers(&self) -> Result<(), String> {
        for url in &self.static_workers() {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("--worker {url:?} must be an http:// URL"));
            }
            if url.starts_with("https://") && self.worker_ca.is_none() {
                return Err("an https:// --worker needs --worker-ca".into());
            }
        }
        Ok(())
    }

    /// Bounds that must be at least 1.
    fn validate_counts(&self) -> Result<(), String> {
        for (name, value) in [
            ("--max-text-chars", self.max_text_chars),
            ("--client-queue-frames", self.client_queue_frames),
            (
                "--max-requests-per-connection",
                self.max_requests_per_connection,
            ),
            ("--max-inflight", self.max_inflight),
            ("--max-connections", self.max_connections),
            (
                "--max-connections-per-address",
                self.max_connections_per_address,
            ),
            ("--max-message-bytes", self.max_message_bytes),
            ("--max-connection-chars", self.max_connection_chars),
            (
                "--requests-per-second-per-address",
                self.requests_per_second_per_address as usize,
            ),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        Ok(())
    }

    /// Timeouts and periods, which must be positive.
    fn validate_durations(&self) -> Result<(), String> {
        for (name, secs) in [
            ("--handshake-timeout-secs", self.handshake_timeout_secs),
            ("--body-timeout-secs", self.body_timeout_secs),
            ("--write-timeout-secs", self.write_timeout_secs),
            ("--idle-timeout-secs", self.idle_timeout_secs),
            ("--stalled-stream-secs", self.stalled_stream_secs),
            ("--progress-timeout-secs", self.progress_timeout_secs),
            ("--first-frame-timeout-secs", self.first_frame_timeout_secs),
            (
                "--worker-connect-timeout-secs",
                self.worker_connect_timeout_secs,
            ),
            ("--breaker-cooldown-secs", self.breaker_cooldown_secs),
        ] {
            if !(secs.is_finite() && secs > 0.0) {
                return Err(format!("{name} must be a positive number"));
            }
        }
        Ok(())
    }

    /// The workers given by `--worker`; the default one when neither it
    /// nor a registry is given.
    pub fn static_workers(&self) -> Vec<String> {
        if self.workers.is_empty() && self.redis_url.is_none() {
            vec![DEFAULT_WORKER.to_owned()]
        } else {
            self.workers.clone()
        }
    }

    /// [`registry_allow`](Self::registry_allow) as patterns.
    pub fn registry_patterns(&self) -> Result<Vec<glob::Pattern>, String> {
        self.registry_allow
            .iter()
            .map(|p| glob::Pattern::new(p.trim()).map_err(|e| format!("{p:?}: {e}")))
            .collect()
    }

    /// [`idle_timeout_secs`](Self::idle_timeout_secs) as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.idle_timeout_secs)
    }

    /// The client listener's bounds: the connection cap (no more than the
    /// process's file-descriptor limit less 256 and the admin listener's
    /// cap, so that the admin listener, the worker channels and Redis
    /// always have descriptors), the per-address cap, the header and write
    /// timeouts and the socket send buffer.
    pub fn client_limits(&self) -> tts_telemetry::listener::Limits {
        let reserve = 256 + self.admin.admin_max_connections;
        tts_telemetry::listener::Limits {
            connections: self
                .max_connections
                .min(tts_telemetry::listener::descriptors_less(reserve)),
            per_address: self.max_connections_per_address,
            header_timeout: Duration::from_secs_f64(self.handshake_timeout_secs),
            write_timeout: Duration::from_secs_f64(self.write_timeout_secs),
            send_buffer: Some(self.ws_send_buffer_bytes),
        }
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
    about = "WebSocket front end for TTS workers",
    after_help = tts_telemetry::exit::help()
)]
pub struct Cli {
    /// WebSocket listen address (the socket is at path `/ws`).
    #[arg(long, env = "TTS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Admin HTTP listen address (`/health`, `/metrics`).
    #[arg(long, env = "TTS_ADMIN_LISTEN", default_value = "127.0.0.1:8081")]
    pub admin_listen: SocketAddr,

    /// Log format: `json` (one object per line) or `text`.
    #[arg(long, env = "TTS_LOG_FORMAT", default_value = "json")]
    pub log_format: String,

    /// Export request spans over OTLP/gRPC to this collector, e.g.
    /// `http://127.0.0.1:4317` (needs a build with `--features otel`).
    #[arg(long, env = "TTS_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Seconds requests in flight may run on after SIGTERM; then each
    /// gets `error` `shutting_down` and connections close with 1001.
    #[arg(long, env = "TTS_SHUTDOWN_GRACE_SECS", default_value_t = 10.0)]
    pub shutdown_grace_secs: f64,

    /// Relay settings.
    #[command(flatten)]
    pub relay: OrchestratorConfig,
}

impl Cli {
    /// Checks everything, installs logging (JSON lines, optional OTLP) and
    /// the metrics recorder. Call before anything binds; a failure is a
    /// configuration error (exit 64).
    pub fn init(&self, component: &'static str) -> Result<tts_telemetry::MetricsHandle, String> {
        self.relay.validate()?;
        if !(self.shutdown_grace_secs.is_finite() && self.shutdown_grace_secs >= 0.0) {
            return Err("--shutdown-grace-secs must be zero or more".into());
        }
        tts_telemetry::init_logging(&self.log_format, self.otlp_endpoint.as_deref(), component)?;
        tts_telemetry::install_metrics()
    }
}

#[cfg(test)]
mod command_line_tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
