//! Shared builders for the end-to-end tests: the real worker and
//! orchestrator on ephemeral loopback ports, and checks on received audio.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tts_orchestrator::{Orchestrator, OrchestratorConfig, RelayStats};
use tts_worker::{EngineKind, Worker, WorkerConfig};

pub mod chaos;

/// A medium English paragraph (~60 s of speech) for streaming tests.
pub const LONG_TEXT: &str = "The history of the telephone is a story of many inventors. \
In the eighteen seventies, several engineers raced to send the human voice over a wire, \
and each of them believed that he was the first. Early calls were faint and noisy, \
and operators had to shout to be heard across a town. Over the following decades, \
amplifiers, switching offices and undersea cables carried conversations across \
continents and oceans. Today a voice travels as a stream of small packets, each one \
checked, numbered and timed, so that a listener hears a steady sound even when the \
network beneath it is anything but steady. Engineers still measure the same things \
their predecessors cared about: how long it takes for the first sound to arrive, \
whether anything was lost on the way, and whether the words arrive in the right order.";

/// A few sentences (~15 s of speech).
pub const MEDIUM_TEXT: &str = "The history of the telephone is a story of many inventors. \
In the eighteen seventies, several engineers raced to send the human voice over a wire, \
and each of them believed that he was the first. Early calls were faint and noisy, \
and operators had to shout to be heard across a town.";

/// The repository's root (where `scripts/setup.sh` puts the voice).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

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

/// Asserts that `samples` (48 kHz) sound like speech of `words` words:
/// plausible duration, loudness that varies over time, not silent, not
/// clipped.
pub fn assert_speech_like(samples: &[i16], words: usize) {
    let seconds = samples.len() as f64 / 48_000.0;
    // English speech runs at roughly 2–4 words per second.
    let (lo, hi) = (words as f64 / 5.0, words as f64 / 1.2 + 1.0);
    assert!(
        (lo..hi).contains(&seconds),
        "{seconds:.2} s of audio for {words} words (expected {lo:.1}–{hi:.1} s)"
    );
    let clipped = samples
        .iter()
        .filter(|s| s.unsigned_abs() >= 32_767)
        .count();
    assert_eq!(clipped, 0, "clipped samples");
    let peak = samples.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
    assert!(peak > 3_000, "peak {peak}: too quiet to be speech");
    // RMS over 50 ms windows: speech alternates loud syllables and quiet gaps.
    let levels: Vec<f64> = samples
        .chunks(2_400)
        .map(|w| (w.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / w.len() as f64).sqrt())
        .collect();
    let loud = levels.iter().filter(|&&l| l > 1_000.0).count();
    let quiet = levels.iter().filter(|&&l| l < 300.0).count();
    assert!(
        loud * 4 > levels.len(),
        "only {loud} of {} windows are loud",
        levels.len()
    );
    assert!(quiet > 0, "no quiet window at all: not speech-like");
}

/// A plain HTTP/1.0 GET on loopback: the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut response))
        .await
        .expect("response in time")
        .expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Serves ordinary traffic through the WebSocket at `ws_url`, so that
/// what is checked next sees a pipeline after real use, not a fresh one:
/// requests in each encoding (PCM, µ-law at 8 kHz, Opus), fast and real
/// time, and one refused request (empty text). Every frame must verify.
/// Returns the frames received.
pub async fn serve_traffic(ws_url: &str) -> usize {
    use tts_client::{Client, Encoding, SynthesizeOptions};
    let mut client = Client::connect(ws_url).await.expect("connect");
    let requests = [
        (Encoding::PcmS16le, true, "Traffic first, then diagnostics."),
        (Encoding::Mulaw, true, "A telephone line hears this."),
        (Encoding::Opus, true, "Compressed speech travels light."),
        (Encoding::PcmS16le, false, "Real time."),
    ];
    let mut frames = 0;
    for (encoding, fast, text) in requests {
        let opts = SynthesizeOptions {
            encoding: Some(encoding),
            fast,
            ..SynthesizeOptions::default()
        };
        let utterance = client.synthesize(text, &opts).await.expect("speech");
        assert_eq!(
            utterance.report.integrity_failures(),
            0,
            "{encoding:?}: every frame verifies"
        );
        frames += utterance.frames.len().max(utterance.report.frames as usize);
    }
    let refused = client
        .synthesize("   ", &SynthesizeOptions::default())
        .await;
    assert!(refused.is_err(), "empty text is refused");
    frames
}

/// Polls `check` every 100 ms until it returns true or `limit` passes;
/// returns whether it became true.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `promtool check metrics` on an exposition; panics with its output
/// when it objects. promtool comes from `scripts/setup.sh --test`.
pub fn promtool_check_metrics(exposition: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (run scripts/setup.sh --test)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of one sample in a Prometheus exposition: `series` is the
/// metric name with its labels exactly as rendered, e.g.
/// `x_total{a="b"}`. Missing series read as 0.
pub fn sample(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The path of one of the workspace's binaries, built on first use (the
/// tests that run real processes need them).
pub fn binary(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--quiet", "--bins"])
            .current_dir(repo_root())
            .status()
            .expect("cargo build");
        assert!(status.success(), "building the binaries failed");
    });
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("debug").join(name)
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A real `redis-server` on a free loopback port, stopped on drop.
pub struct RedisServer {
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
    child: std::process::Child,
}

impl RedisServer {
    /// Starts `redis-server` (from `scripts/setup.sh --test`) without
    /// persistence and waits until it accepts connections.
    pub async fn start() -> Self {
        let port = free_port();
        Self {
            url: format!("redis://127.0.0.1:{port}"),
            child: Self::spawn(port).await,
        }
    }

    async fn spawn(port: u16) -> std::process::Child {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (run scripts/setup.sh --test)");
        let up = eventually(Duration::from_secs(10), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        assert!(up, "redis-server did not start");
        child
    }

    fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port in the URL")
    }

    /// Kills the server (its data goes with it).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(self.port()).await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A service run as its own process from the workspace's binaries (for
/// signals and memory measurements), killed on drop.
pub struct ServiceProcess {
    /// Its main listener (gRPC for a worker, WebSocket for an orchestrator).
    pub addr: SocketAddr,
    /// Its metrics or admin listener.
    pub admin: SocketAddr,
    child: std::process::Child,
}

impl ServiceProcess {
    /// Starts `tts-worker` on free loopback ports with `args` added, and
    /// waits (up to 60 s) until it serves `/metrics` and reports SERVING.
    pub async fn worker(args: &[&str]) -> Self {
        Self::worker_on(free_port(), args).await
    }

    /// [`worker`](Self::worker) on gRPC port `port` (to restart one where
    /// it was).
    pub async fn worker_on(port: u16, args: &[&str]) -> Self {
        Self::start_worker(port, args, None, &[]).await
    }

    /// [`worker`](Self::worker) started through `launcher` (e.g. `["nice",
    /// "-n", "10"]`: every thread of it at that priority).
    pub async fn worker_under(launcher: &[&str], args: &[&str]) -> Self {
        Self::start_worker(free_port(), args, None, launcher).await
    }

    /// [`worker`](Self::worker) writing its JSON log (`RUST_LOG=info`) to
    /// `log`.
    pub async fn worker_logged(args: &[&str], log: &std::path::Path) -> Self {
        Self::start_worker(free_port(), args, Some(log), &[]).await
    }

    async fn start_worker(
        port: u16,
        args: &[&str],
        log: Option<&std::path::Path>,
        launcher: &[&str],
    ) -> Self {
        let metrics = free_port();
        let mut command = match launcher.split_first() {
            Some((program, launcher_args)) => {
                let mut c = std::process::Command::new(program);
                c.args(launcher_args).arg(binary("tts-worker"));
                c
            }
            None => std::process::Command::new(binary("tts-worker")),
        };
        command
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
            .args(args)
            .current_dir(repo_root());
        stderr_to(&mut command, log);
        let child = command.spawn().expect("tts-worker starts");
        let process = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            admin: SocketAddr::from(([127, 0, 0, 1], metrics)),
            child,
        };
        let url = format!("http://{}", process.addr);
        let up = eventually(Duration::from_secs(60), || {
            let url = url.clone();
            async move { worker_serving(&url).await }
        })
        .await;
        assert!(up, "tts-worker did not become SERVING");
        process
    }

    /// Starts `tts-orchestrator` relaying to `worker_url` with `args`
    /// added, and waits (up to 30 s) until its admin listener answers.
    pub async fn orchestrator(worker_url: &str, args: &[&str]) -> Self {
        Self::start_orchestrator(worker_url, args, None).await
    }

    /// [`orchestrator`](Self::orchestrator) writing its JSON log
    /// (`RUST_LOG=info`) to `log`.
    pub async fn orchestrator_logged(
        worker_url: &str,
        args: &[&str],
        log: &std::path::Path,
    ) -> Self {
        Self::start_orchestrator(worker_url, args, Some(log)).await
    }

    async fn start_orchestrator(
        worker_url: &str,
        args: &[&str],
        log: Option<&std::path::Path>,
    ) -> Self {
        let (port, admin) = (free_port(), free_port());
        let mut command = std::process::Command::new(binary("tts-orchestrator"));
        command
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--worker", worker_url])
            .args(args)
            .current_dir(repo_root());
        stderr_to(&mut command, log);
        let child = command.spawn().expect("tts-orchestrator starts");
        let process = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            child,
        };
        let admin = process.admin;
        let up = eventually(Duration::from_secs(30), || async move {
            tokio::net::TcpStream::connect(admin).await.is_ok()
        })
        .await;
        assert!(up, "tts-orchestrator did not start");
        process
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`STOP`, `CONT`, `TERM`, `KILL`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name}");
    }

    /// Its resident memory, bytes.
    pub fn rss_bytes(&self) -> u64 {
        rss_bytes(self.pid())
    }

    /// Waits (up to `limit`) for the process to exit.
    pub async fn exited(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        // A stopped process must be continued to die of SIGKILL promptly.
        let _ = std::process::Command::new("kill")
            .args(["-CONT".to_owned(), self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a service's standard error to `log` at `RUST_LOG=info` (its JSON
/// log lines), or, without one, nowhere.
fn stderr_to(command: &mut std::process::Command, log: Option<&std::path::Path>) {
    match log {
        Some(path) => {
            let file = std::fs::File::create(path).expect("log file");
            command.env("RUST_LOG", "info").stderr(file);
        }
        None => {
            command.stderr(std::process::Stdio::null());
        }
    }
}

/// Whether the worker at `url` answers `grpc.health.v1` with SERVING.
pub async fn worker_serving(url: &str) -> bool {
    use tonic_health::pb::health_check_response::ServingStatus;
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(url.to_owned()) else {
        return false;
    };
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest {
        service: tts_proto::HEALTH_SERVICE.into(),
    };
    matches!(client.check(request).await, Ok(r) if r.get_ref().status == ServingStatus::Serving as i32)
}

/// Resident memory of process `pid`, bytes (from `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// A raw WebSocket to `url` whose kernel receive buffer is `recv_buffer`
/// bytes (small, to stand for a client that reads nothing), with extra
/// handshake headers.
pub async fn raw_ws(
    url: &str,
    recv_buffer: Option<u32>,
    headers: &[(&str, &str)],
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    tokio_tungstenite::tungstenite::Error,
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request()?;
    for (k, v) in headers {
        if let (Ok(name), Ok(value)) = (
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()),
            v.parse(),
        ) {
            request.headers_mut().insert(name, value);
        }
    }
    let host = request
        .uri()
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let addr: SocketAddr = host.parse().map_err(|_| {
        tokio_tungstenite::tungstenite::Error::Url(
            tokio_tungstenite::tungstenite::error::UrlError::NoHostName,
        )
    })?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    let tcp = socket.connect(addr).await?;
    let (ws, _) = tokio_tungstenite::client_async(request, tcp).await?;
    Ok(ws)
}

/// The next text message as JSON, or the close frame's code, from a raw
/// WebSocket; frames are skipped. `None` when the stream ends without a
/// close frame.
pub async fn next_text_or_close(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) -> Option<Result<serde_json::Value, u16>> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match ws.next().await? {
            Ok(Message::Text(t)) => {
                return Some(Ok(serde_json::from_str(t.as_str()).unwrap_or_default()));
            }
            Ok(Message::Close(frame)) => return Some(Err(frame.map_or(1005, |f| f.code.into()))),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// What an HTTP request got back.
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The header block, as sent.
    pub headers: String,
    /// The body.
    pub body: Vec<u8>,
    /// From sending the request to the first byte of the body.
    pub first_body_byte: Duration,
}

/// A plain HTTP/1.0 POST of a JSON body on loopback (the server then
/// streams the body and closes, with no chunked framing to undo).
pub async fn http_post(addr: SocketAddr, path: &str, json: &str, headers: &[&str]) -> HttpAnswer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{extra}\r\n{json}",
        json.len()
    );
    let sent = std::time::Instant::now();
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    let mut first_body_byte = None;
    let mut buf = [0u8; 16 * 1024];
    let limit = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = tokio::time::timeout_at(limit, tcp.read(&mut buf))
            .await
            .expect("response in time")
            .expect("read");
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if first_body_byte.is_none()
            && let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n")
            && raw.len() > at + 4
        {
            first_body_byte = Some(sent.elapsed());
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let headers = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    HttpAnswer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
        first_body_byte: first_body_byte.unwrap_or_default(),
    }
}

/// Runs `tests/python/SCRIPT ARGS…` with the test environment's Python
/// (`.cache/pyenv`, made by `scripts/setup.sh --test`), asserts that it
/// succeeded, and returns the JSON line it printed.
pub async fn python_json(script: &str, args: Vec<String>) -> serde_json::Value {
    let python = repo_root().join(".cache/pyenv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash scripts/setup.sh --test`",
        python.display()
    );
    let script = repo_root().join("tests/python").join(script);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .arg(&script)
            .args(&args)
            .output()
    })
    .await
    .expect("join")
    .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON line")
}
