//! Worker configuration: flags with `TTS_*` environment mirrors, checked
//! before anything binds or loads.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Which engine speaks when a request names no voice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    /// Piper neural voice on ONNX Runtime (the default).
    Piper,
    /// espeak-ng's formant voice: light, robotic.
    Espeak,
}

/// How the worker runs.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerConfig {
    /// Engine of the default voice. The other engine's voices stay
    /// selectable by name when they are installed.
    #[arg(long, env = "TTS_ENGINE", value_enum, default_value = "piper")]
    pub engine: EngineKind,

    /// Directory holding Piper voices (`NAME.onnx` + `NAME.onnx.json`):
    /// every pair in it is loaded and offered under its NAME.
    #[arg(long, env = "TTS_VOICE_DIR", default_value = ".cache/voices")]
    pub voice_dir: PathBuf,

    /// The default Piper voice (file name without `.onnx`), used when a
    /// request names none; the worker does not start without it. Other
    /// voices that fail to load are left out with a warning.
    #[arg(long, env = "TTS_PIPER_VOICE", default_value = "en_US-joe-medium")]
    pub piper_voice: String,

    /// ONNX Runtime shared library.
    #[arg(
        long,
        env = "TTS_ONNXRUNTIME",
        default_value = ".cache/onnxruntime/libonnxruntime.so"
    )]
    pub onnxruntime: PathBuf,

    /// Where the Piper voice runs: `cpu`, or `cuda` / `cuda:N` (ONNX
    /// Runtime's CUDA provider; needs a build with `--features cuda`, an
    /// NVIDIA driver and `--onnxruntime` pointing at ONNX Runtime's GPU
    /// build, which `scripts/setup.sh --gpu` fetches). A GPU that cannot
    /// be used stops the worker at start: it never falls back to the CPU.
    #[arg(long, env = "TTS_DEVICE", default_value = "cpu")]
    pub device: crate::gpu::Device,

    /// With a GPU: below this much free device memory, in MiB, health
    /// reports NOT_SERVING (the reason is logged and in `ListVoices`).
    #[arg(long, env = "TTS_MIN_GPU_FREE_MB", default_value_t = 256)]
    pub min_gpu_free_mb: u64,

    /// Syntheses that run at once (one thread each).
    #[arg(long, env = "TTS_SYNTHESIS_THREADS", default_value_t = 2)]
    pub synthesis_threads: usize,

    /// ONNX Runtime intra-op threads per synthesis.
    #[arg(long, env = "TTS_INTRA_THREADS", default_value_t = 1)]
    pub intra_threads: usize,

    /// Stream inside each clause (Piper voices whose graph can be split):
    /// first audio after the text encoder and one small decoder window.
    /// `false` synthesises whole clauses.
    #[arg(long, env = "TTS_STREAM_IN_CLAUSE", default_value_t = true, action = clap::ArgAction::Set)]
    pub stream_in_clause: bool,

    /// Latent frames of context on each side of a streamed decoder window
    /// (10 matches one-shot output to 2e-6; the analytic bound is 11).
    #[arg(long, env = "TTS_DECODER_CONTEXT", default_value_t = 10)]
    pub decoder_context: usize,

    /// Largest decoder window, in latent frames (128 ≈ 1.5 s of audio).
    /// Smaller windows pre-empt sooner but spend more on context.
    #[arg(long, env = "TTS_MAX_WINDOW_FRAMES", default_value_t = 128)]
    pub max_window_frames: usize,

    /// Intra-op threads a request's first step may use when fewer streams
    /// are active than there are synthesis threads (an extra set of
    /// sessions; 0 or 1 turns this off).
    #[arg(long, env = "TTS_IDLE_INTRA_THREADS", default_value_t = 2)]
    pub idle_intra_threads: usize,

    /// Most streams whose steps one synthesis thread runs together: it
    /// takes the step with the earliest deadline and up to N − 1 others of
    /// the same voice due within `--decode-batch-horizon-ms` after it, runs
    /// their text parts and flow blocks one by one and their decoder
    /// windows as one call (each padded to a common width, without
    /// changing its output). Default: 1 (no batching) on the CPU, where a
    /// batch costs what its windows cost one by one; 16 with a GPU, where
    /// one call costs about what a small one does.
    #[arg(long, env = "TTS_DECODE_BATCH")]
    pub decode_batch: Option<usize>,

    /// Give each input shape its own ONNX Runtime session, all made at
    /// start: the decoder's (a standard window width, and a batch padded
    /// to a power of two up to `--decode-batch` with zero windows whose
    /// output is dropped), the text part's (phoneme ids padded to a power
    /// of two past their length) and the flow's (blocks padded with
    /// masked-out frames to a multiple of 64). A GPU provider that plans
    /// its convolutions for the last shape it saw then never plans again;
    /// decoder windows at a clause's edge that keep their own width share
    /// one session. Default: on with a GPU; off on the CPU, where shapes
    /// cost nothing and each session holds its own copy of its part.
    #[arg(long, env = "TTS_CONSTANT_SHAPES", action = clap::ArgAction::Set)]
    pub constant_shapes: Option<bool>,

    /// On a GPU with constant shapes, capture each decoder and flow shape
    /// as a CUDA graph at start and replay it on every call (its input
    /// and output stay at fixed device addresses, bound once). A shape
    /// the CUDA provider cannot capture runs without a graph, with a
    /// warning. Off by default until measured.
    #[arg(long, env = "TTS_CUDA_GRAPHS", default_value_t = false, action = clap::ArgAction::Set)]
    pub cuda_graphs: bool,

    /// On a GPU, run each voice's text part (phonemes to latent frames,
    /// once per clause: many small kernels) on the CPU, and only the flow
    /// and the decoder on the GPU.
    #[arg(long, env = "TTS_TEXT_PART_ON_CPU", default_value_t = false, action = clap::ArgAction::Set)]
    pub text_part_on_cpu: bool,

    /// Run each streaming voice's decoder with FP16 weights and
    /// activations (its input and output stay FP32); the voice's revision
    /// gains `-fp16`, so cached audio of the FP32 decoder is not replayed.
    /// Meant for a GPU; on the CPU ONNX Runtime computes in FP32 between
    /// casts, which only shows the rounding's effect on the audio.
    #[arg(long, env = "TTS_FP16_DECODER", default_value_t = false, action = clap::ArgAction::Set)]
    pub fp16_decoder: bool,

    /// A step joins a batch only if it is due at most this many
    /// milliseconds after the batch's earliest step.
    #[arg(long, env = "TTS_DECODE_BATCH_HORIZON_MS", default_value_t = 500)]
    pub decode_batch_horizon_ms: u64,

    /// Requests admitted at once, whatever admission control says (a
    /// hard bound); more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "TTS_WORKER_MAX_REQUESTS", default_value_t = 64)]
    pub max_requests: usize,

    /// A new request's first audio is due this many milliseconds after it
    /// arrives (its deadline in the scheduler).
    #[arg(long, env = "TTS_FIRST_AUDIO_BUDGET_MS", default_value_t = 100)]
    pub first_audio_budget_ms: u64,

    /// A stream this many milliseconds of audio ahead of its playout clock
    /// is parked until it needs more.
    #[arg(long, env = "TTS_LOOKAHEAD_MS", default_value_t = 2000)]
    pub lookahead_ms: u64,

    /// A frame leaves at most this many milliseconds before its due time
    /// (the listener's buffer beyond its own jitter buffer).
    #[arg(long, env = "TTS_SEND_AHEAD_MS", default_value_t = 1000)]
    pub send_ahead_ms: u64,

    /// A stream's next step is due this many milliseconds before its
    /// first frame should play (under load the send-ahead is drawn on).
    #[arg(long, env = "TTS_SAFETY_MARGIN_MS", default_value_t = 100)]
    pub safety_margin_ms: u64,

    /// Refuse a request with `overloaded` when admitting it would make
    /// admitted streams late (`false`: admit up to --max-requests).
    #[arg(long, env = "TTS_ADMISSION", default_value_t = true, action = clap::ArgAction::Set)]
    pub admission: bool,

    /// Share of the synthesis threads' time admission may promise to
    /// streams (0–1]; the rest absorbs estimate error and steps that cannot
    /// be pre-empted.
    #[arg(long, env = "TTS_ADMISSION_EFFICIENCY", default_value_t = 0.8)]
    pub admission_efficiency: f64,

    /// Most audio one request may ask for, in seconds (estimated from its
    /// text with the voice's measured audio per character); a longer text
    /// is refused with `text_too_long`.
    #[arg(long, env = "TTS_MAX_AUDIO_SECS", default_value_t = 300.0)]
    pub max_audio_secs: f64,

    /// Seconds a request may wait for its reader (the orchestrator) to
    /// take a frame; then it ends with `client_too_slow` and frees its
    /// slot.
    #[arg(long, env = "TTS_STALLED_READER_SECS", default_value_t = 30.0)]
    pub stalled_reader_secs: f64,

    /// Frames released to a request's response stream and not yet taken
    /// by gRPC (16 = 320 ms of audio). Before release, synthesised frames
    /// wait in a queue of --lookahead-ms + --send-ahead-ms of audio; when
    /// it is full, that request runs no further synthesis step.
    #[arg(long, env = "TTS_WORKER_STREAM_FRAMES", default_value_t = 16)]
    pub stream_queue_frames: usize,

    /// Longest accepted text, in characters (`--max-text-chars` on the
    /// worker's command line; the orchestrator passes its own to an
    /// embedded worker).
    #[arg(skip = 5000usize)]
    pub max_text_chars: usize,

    /// A synthesis thread that holds work without progress for longer
    /// than this, in seconds, is reported: a warning naming the requests
    /// it holds, and `tts_worker_synthesis_threads_stalled`.
    #[arg(long, env = "TTS_STALLED_THREAD_SECS", default_value_t = 5.0)]
    pub stalled_thread_secs: f64,

    /// Where fault injection (chaos experiments) comes from: a registry
    /// the binary builds from `--allow-fault-injection` and
    /// `--admin-token`, or one a test or `tts-pipeline` shares. `None`: no
    /// fault can be started.
    #[arg(skip)]
    pub faults: Option<std::sync::Arc<tts_telemetry::faults::Faults>>,

    /// Test and benchmark hook: serve only the fixed-cost test voice (a
    /// tone whose every step sleeps a fixed time), so that capacity is the
    /// same on any machine. On the command line (hidden):
    /// `--fixed-cost-voice STEP_AUDIO_MS,STEP_TIME_MS,AUDIO_PER_CHAR_MS[,MARGINAL_MS]`;
    /// with `MARGINAL_MS` (and `--decode-batch` above 1) it behaves as a
    /// GPU does: a batch of `b` steps is one call of `STEP_TIME_MS + (b −
    /// 1) × MARGINAL_MS`.
    #[arg(long = "fixed-cost-voice", hide = true, value_parser = parse_fixed_cost)]
    pub fixed_cost: Option<crate::engine::FixedCost>,

    /// Disable the voice's random noise (scales [0, 1, 0]): the same text
    /// always gives the same samples.
    #[arg(long, env = "TTS_DETERMINISTIC")]
    pub deterministic: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            config: WorkerConfig,
        }
        // Parsing no arguments yields exactly the documented defaults.
        match Defaults::try_parse_from(["defaults"]) {
            Ok(d) => d.config,
            Err(e) => panic!("default worker configuration does not parse: {e}"),
        }
    }
}

impl WorkerConfig {
    /// Checks values that flags' types cannot.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("--synthesis-threads", self.synthesis_threads),
            ("--intra-threads", self.intra_threads),
            ("--max-requests", self.max_requests),
            ("--stream-queue-frames", self.stream_queue_frames),
            ("--max-text-chars", self.max_text_chars),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        for (name, secs) in [
            ("--max-audio-secs", self.max_audio_secs),
            ("--stalled-reader-secs", self.stalled_reader_secs),
            ("--stalled-thread-secs", self.stalled_thread_secs),
        ] {
            if !(secs.is_finite() && secs > 0.0) {
                return Err(format!("{name} must be a positive number"));
            }
        }
        if !(self.admission_efficiency > 0.0 && self.admission_efficiency <= 1.0) {
            return Err("--admission-efficiency must be in (0, 1]".into());
        }
        if self.decode_batch.is_some_and(|n| !(1..=256).contains(&n)) {
            return Err("--decode-batch must be between 1 and 256".into());
        }
        if self.max_window_frames < 8 {
            return Err("--max-window-frames must be at least 8".into());
        }
        if self.cuda_graphs && !(self.constant_shapes() && self.device != crate::gpu::Device::Cpu) {
            return Err("--cuda-graphs needs a GPU --device and --constant-shapes".into());
        }
        if self.text_part_on_cpu && self.device == crate::gpu::Device::Cpu {
            return Err("--text-part-on-cpu needs a GPU --device".into());
        }
        Ok(())
    }

    /// The scheduler's policy from these flags.
    pub fn policy(&self) -> crate::sched::Policy {
        use std::time::Duration;
        // Latent frames of Piper's decoder: 256 samples at 22,050 Hz.
        let window = Duration::from_secs_f64(self.max_window_frames as f64 * 256.0 / 22_050.0);
        crate::sched::Policy {
            threads: self.synthesis_threads,
            first_audio_budget: Duration::from_millis(self.first_audio_budget_ms),
            lookahead: Duration::from_millis(self.lookahead_ms),
            send_ahead: Duration::from_millis(self.send_ahead_ms),
            safety_margin: Duration::from_millis(self.safety_margin_ms),
            efficiency: self.admission_efficiency,
            step_audio: window,
            admission: self.admission,
            batch: self.decode_batch(),
            batch_horizon: Duration::from_millis(self.decode_batch_horizon_ms),
        }
    }

    /// Whether each decoder shape has its own session:
    /// `--constant-shapes`, or the device's default.
    pub fn constant_shapes(&self) -> bool {
        self.constant_shapes
            .unwrap_or(matches!(self.device, crate::gpu::Device::Cuda(_)))
    }

    /// Streams per batch: `--decode-batch`, or the device's default.
    pub fn decode_batch(&self) -> usize {
        self.decode_batch.unwrap_or(match self.device {
            crate::gpu::Device::Cpu => 1,
            crate::gpu::Device::Cuda(_) => 16,
        })
    }
}

/// `STEP_AUDIO_MS,STEP_TIME_MS,AUDIO_PER_CHAR_MS[,MARGINAL_MS]` as a
/// fixed-cost voice (the marginal milliseconds per extra step of a batch
/// may have a fraction).
fn parse_fixed_cost(text: &str) -> Result<crate::engine::FixedCost, String> {
    use std::time::Duration;
    const USAGE: &str = "expected STEP_AUDIO_MS,STEP_TIME_MS,AUDIO_PER_CHAR_MS[,MARGINAL_MS] \
                         (audio and per-character above 0)";
    let ms: Vec<f64> = text
        .split(',')
        .map(|v| v.trim().parse::<f64>().map_err(|e| format!("{v:?}: {e}")))
        .collect::<Result<_, _>>()?;
    let whole = |v: f64| v.fract() == 0.0 && (0.0..=3_600_000.0).contains(&v);
    let (audio, time, per_char, marginal) = match ms[..] {
        [a, t, c] => (a, t, c, 0.0),
        [a, t, c, m] => (a, t, c, m),
        _ => return Err(USAGE.into()),
    };
    if ![audio, time, per_char].into_iter().all(whole)
        || audio == 0.0
        || per_char == 0.0
        || !(0.0..=60_000.0).contains(&marginal)
    {
        return Err(USAGE.into());
    }
    Ok(crate::engine::FixedCost {
        step_audio: Duration::from_millis(audio as u64),
        step_time: Duration::from_millis(time as u64),
        audio_per_char: Duration::from_millis(per_char as u64),
        marginal: Duration::from_secs_f64(marginal / 1_000.0),
    })
}

/// How the worker's gRPC server runs: shutdown, authentication, TLS.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerConfig {
    /// Seconds the worker keeps answering after a shutdown signal, with
    /// health NOT_SERVING and new requests refused, before it closes its
    /// listener.
    #[arg(long, env = "TTS_DRAIN_NOTICE_SECS", default_value_t = 2.0)]
    pub drain_notice_secs: f64,

    /// Seconds streams in progress may run on after a shutdown signal;
    /// then each ends with `worker_unavailable`.
    #[arg(long, env = "TTS_SHUTDOWN_GRACE_SECS", default_value_t = 10.0)]
    pub shutdown_grace_secs: f64,

    /// Require `authorization: Bearer TOKEN` metadata on every `tts.v1.Tts`
    /// call (health checks stay open). Compared in constant time.
    #[arg(long, env = "TTS_WORKER_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,

    /// Serve gRPC over TLS with this certificate chain (PEM); needs
    /// `--tls-key`.
    #[arg(long, env = "TTS_WORKER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The TLS private key (PEM).
    #[arg(long, env = "TTS_WORKER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require client certificates signed by this CA (PEM).
    #[arg(long, env = "TTS_WORKER_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Announce this worker in Redis (e.g. `redis://127.0.0.1:6379`), so
    /// that orchestrators given the same `--redis-url` route to it: an
    /// entry renewed every third of `--registry-ttl-secs`, deleted when
    /// the worker drains.
    #[arg(long, env = "TTS_REDIS_URL")]
    pub redis_url: Option<String>,

    /// The URL orchestrators reach this worker at (default:
    /// `http://` + `--listen`, which must then not be a wildcard address).
    #[arg(long, env = "TTS_ADVERTISE_URL")]
    pub advertise_url: Option<String>,

    /// Seconds the registry entry lives without a heartbeat: how long
    /// orchestrators may keep routing to a worker that died without
    /// draining (its breaker usually stops them sooner).
    #[arg(long, env = "TTS_REGISTRY_TTL_SECS", default_value_t = 3.0)]
    pub registry_ttl_secs: f64,

    /// Where this worker's metrics are served, as `ListVoices` reports it
    /// (set by the binary from `--metrics-listen`).
    #[arg(skip)]
    pub metrics_url: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            server: ServerConfig,
        }
        match Defaults::try_parse_from(["defaults"]) {
            Ok(d) => d.server,
            Err(e) => panic!("default server configuration does not parse: {e}"),
        }
    }
}

impl ServerConfig {
    /// Checks values that flags' types cannot.
    pub fn validate(&self) -> Result<(), String> {
        for (name, secs) in [
            ("--drain-notice-secs", self.drain_notice_secs),
            ("--shutdown-grace-secs", self.shutdown_grace_secs),
        ] {
            if !(secs.is_finite() && secs >= 0.0) {
                return Err(format!("{name} must be zero or more"));
            }
        }
        if self.auth_token.as_deref() == Some("") {
            return Err("--auth-token must not be empty".into());
        }
        if !(self.registry_ttl_secs.is_finite() && self.registry_ttl_secs >= 0.3) {
            return Err("--registry-ttl-secs must be at least 0.3".into());
        }
        if self.redis_url.is_some() && self.advertise_url.is_none() {
            return Err(
                "--redis-url needs --advertise-url (or a --listen address that is not a wildcard)"
                    .into(),
            );
        }
        if let Some(url) = &self.advertise_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!("--advertise-url {url:?} must be an http:// URL"));
        }
        Ok(())
    }
}

/// The `tts-worker` command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "tts-worker",
    version,
    about = "Text-to-speech gRPC worker",
    after_help = tts_telemetry::exit::help()
)]
pub struct Cli {
    /// gRPC listen address.
    #[arg(long, env = "TTS_WORKER_LISTEN", default_value = "127.0.0.1:7001")]
    pub listen: SocketAddr,

    /// Prometheus `GET /metrics` listen address.
    #[arg(
        long,
        env = "TTS_WORKER_METRICS_LISTEN",
        default_value = "127.0.0.1:9091"
    )]
    pub metrics_listen: SocketAddr,

    /// Log format: `json` (one object per line) or `text`.
    #[arg(long, env = "TTS_LOG_FORMAT", default_value = "json")]
    pub log_format: String,

    /// Export request spans over OTLP/gRPC to this collector, e.g.
    /// `http://127.0.0.1:4317` (needs a build with `--features otel`).
    #[arg(long, env = "TTS_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Longest accepted text, in characters.
    #[arg(long, env = "TTS_MAX_TEXT_CHARS", default_value_t = 5000)]
    pub max_text_chars: usize,

    /// Engine, voices and queues.
    #[command(flatten)]
    pub worker: WorkerConfig,

    /// Shutdown, authentication, TLS.
    #[command(flatten)]
    pub server: ServerConfig,

    /// Fault injection and profiling on the metrics listener.
    #[command(flatten)]
    pub admin: tts_telemetry::AdminConfig,
}

impl Cli {
    /// The worker configuration with every command-line value applied
    /// (the fault registry built from the admin flags).
    pub fn config(&self) -> WorkerConfig {
        WorkerConfig {
            max_text_chars: self.max_text_chars,
            faults: Some(
                self.admin
                    .faults(&[tts_telemetry::faults::Component::Worker]),
            ),
            ..self.worker.clone()
        }
    }
}

#[cfg(test)]
mod command_line_tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn a_fixed_cost_voice_parses_from_three_or_four_numbers() {
        use std::time::Duration;
        let cost = super::parse_fixed_cost("500,150,50").expect("parses");
        assert_eq!(cost.step_time, Duration::from_millis(150));
        assert_eq!(cost.marginal, Duration::ZERO);
        let batched = super::parse_fixed_cost("200,20,40,0.5").expect("parses");
        assert_eq!(batched.marginal, Duration::from_micros(500));
        assert_eq!(batched.call(64), Duration::from_micros(51_500));
        for bad in [
            "",
            "1,2",
            "0,1,1",
            "1,1,0",
            "a,b,c",
            "1,2,3,4,5",
            "1.5,2,3",
            "1,2,3,-1",
            "1,2,3,nan",
        ] {
            assert!(super::parse_fixed_cost(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn decode_batch_and_constant_shapes_default_to_the_device() {
        use crate::gpu::Device;
        let cpu = super::WorkerConfig::default();
        assert_eq!((cpu.decode_batch(), cpu.policy().batch), (1, 1));
        let gpu = super::WorkerConfig {
            device: Device::Cuda(0),
            ..super::WorkerConfig::default()
        };
        assert_eq!(gpu.decode_batch(), 16);
        assert!(!cpu.constant_shapes() && gpu.constant_shapes());
        let chosen = super::WorkerConfig {
            decode_batch: Some(4),
            constant_shapes: Some(false),
            ..gpu
        };
        assert_eq!(chosen.policy().batch, 4);
        assert!(!chosen.constant_shapes());
        let graphs = super::WorkerConfig {
            cuda_graphs: true,
            ..super::WorkerConfig::default()
        };
        assert!(graphs.validate().is_err(), "no graphs on the CPU");
        let text = super::WorkerConfig {
            text_part_on_cpu: true,
            ..super::WorkerConfig::default()
        };
        assert!(text.validate().is_err(), "already on the CPU");
        assert!(
            super::WorkerConfig {
                device: Device::Cuda(0),
                ..graphs
            }
            .validate()
            .is_ok()
        );
        for bad in [0, 257] {
            let config = super::WorkerConfig {
                decode_batch: Some(bad),
                ..super::WorkerConfig::default()
            };
            assert!(config.validate().is_err(), "--decode-batch {bad}");
        }
    }
}
