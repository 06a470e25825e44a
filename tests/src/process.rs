//! The workspace's binaries run as processes of their own (for signals,
//! memory and exit codes), and the test environment's Python.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::{eventually, worker_serving};

/// The repository's root (where `scripts/setup.sh` puts the voice).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
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
        Self::start_orchestrator(Some(worker_url), args, None).await
    }

    /// Spawns `tts-orchestrator` without a static worker (its workers come
    /// from the registry `args` name) and returns at once, before it
    /// listens.
    pub fn registry_orchestrator_spawned(args: &[&str]) -> Self {
        Self::spawn_orchestrator(None, args, None)
    }

    /// [`orchestrator`](Self::orchestrator) writing its JSON log
    /// (`RUST_LOG=info`) to `log`.
    pub async fn orchestrator_logged(
        worker_url: &str,
        args: &[&str],
        log: &std::path::Path,
    ) -> Self {
        Self::start_orchestrator(Some(worker_url), args, Some(log)).await
    }

    async fn start_orchestrator(
        worker_url: Option<&str>,
        args: &[&str],
        log: Option<&std::path::Path>,
    ) -> Self {
        let process = Self::spawn_orchestrator(worker_url, args, log);
        let admin = process.admin;
        let up = eventually(Duration::from_secs(30), || async move {
            tokio::net::TcpStream::connect(admin).await.is_ok()
        })
        .await;
        assert!(up, "tts-orchestrator did not start");
        process
    }

    fn spawn_orchestrator(
        worker_url: Option<&str>,
        args: &[&str],
        log: Option<&std::path::Path>,
    ) -> Self {
        let (port, admin) = (free_port(), free_port());
        let mut command = std::process::Command::new(binary("tts-orchestrator"));
        command
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(
                worker_url
                    .map(|url| ["--worker", url])
                    .into_iter()
                    .flatten(),
            )
            .args(args)
            .current_dir(repo_root());
        stderr_to(&mut command, log);
        let child = command.spawn().expect("tts-orchestrator starts");
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            child,
        }
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

    /// Waits (up to `limit`) for the process to exit: woken by `SIGCHLD`,
    /// not by polling.
    pub async fn exited(&mut self, limit: Duration) -> bool {
        use tokio::signal::unix::{SignalKind, signal};
        // Listening before the first look, so that an exit between the look
        // and the wait still wakes it.
        let mut children = signal(SignalKind::child()).expect("a SIGCHLD listener");
        let gone = async {
            while !matches!(self.child.try_wait(), Ok(Some(_))) {
                children.recv().await;
            }
        };
        tokio::time::timeout(limit, gone).await.is_ok()
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

/// Resident memory of process `pid`, bytes (from `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
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
