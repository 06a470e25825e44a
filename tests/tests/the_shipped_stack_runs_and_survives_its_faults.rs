//! What we ship runs: `scripts/stack.sh up` builds the image and starts
//! `compose.yaml` (Redis, two workers registered through it, the
//! orchestrator, Prometheus), and then, against the running containers:
//! speech through the published port with every frame verified, the
//! OpenAI endpoint, `doctor health` from inside the stack, every
//! Prometheus target up with the rules loaded; a worker killed mid-traffic,
//! one cut off the network, a rolling restart of both workers under load,
//! Redis restarted and the orchestrator restarted, each with what clients
//! see and how fast the stack notices and recovers. `scripts/stack.sh
//! down` leaves nothing behind.
//!
//! Skipped, saying so, only where no container engine can run at all.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tts_client::{Client, ClientError, SynthesizeOptions};
use tts_tests::{eventually, free_port, http_get, http_post, repo_root};

const TEXT: &str = "The stack speaks as it ships, container by container.";

/// The compose project under test, on free ports.
#[derive(Clone)]
struct Stack {
    project: String,
    ws: SocketAddr,
    admin: SocketAddr,
    prometheus: SocketAddr,
}

impl Stack {
    fn script(&self, action: &str) -> std::process::Output {
        Command::new("bash")
            .arg("scripts/stack.sh")
            .arg(action)
            .current_dir(repo_root())
            .env("TTS_STACK_PROJECT", &self.project)
            .env("TTS_PORT", self.ws.port().to_string())
            .env("TTS_ADMIN_PORT", self.admin.port().to_string())
            .env("TTS_PROMETHEUS_PORT", self.prometheus.port().to_string())
            .output()
            .expect("bash runs")
    }

    /// `docker compose` (or docker-compose) on this project.
    fn compose(&self, args: &[&str]) -> (bool, String) {
        let plugin = Command::new("docker")
            .args(["compose", "version"])
            .output()
            .is_ok_and(|o| o.status.success());
        let mut command = if plugin {
            let mut c = Command::new("docker");
            c.arg("compose");
            c
        } else {
            Command::new("docker-compose")
        };
        let out = command
            .args(["-p", &self.project, "-f", "compose.yaml"])
            .args(args)
            .current_dir(repo_root())
            .env("TTS_PORT", self.ws.port().to_string())
            .env("TTS_ADMIN_PORT", self.admin.port().to_string())
            .env("TTS_PROMETHEUS_PORT", self.prometheus.port().to_string())
            .output()
            .expect("compose runs");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// The id of a service's container.
    fn container(&self, service: &str) -> String {
        let (ok, out) = self.compose(&["ps", "-q", service]);
        assert!(ok, "{out}");
        out.lines().next().unwrap_or_default().trim().to_owned()
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.ws)
    }

    async fn ready(&self) -> serde_json::Value {
        let (_, body) = http_get(self.admin, "/ready").await;
        serde_json::from_str(&body).unwrap_or_default()
    }

    /// Waits (up to `limit`) for `/ready`'s status to be `status`; how
    /// long it took.
    async fn until_ready(&self, status: &str, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        let admin = self.admin;
        let reached = eventually(limit, || async move {
            tokio::net::TcpStream::connect(admin).await.is_ok() && {
                let (_, body) = http_get(admin, "/ready").await;
                body.contains(&format!("\"status\":\"{status}\""))
            }
        })
        .await;
        reached.then(|| started.elapsed())
    }
}

impl Stack {
    /// Waits (up to `limit`) until `/ready` lists both workers serving with
    /// their breakers closed; how long it took.
    async fn both_serving(&self, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        let admin = self.admin;
        let reached = eventually(limit, || async move {
            let (_, body) = http_get(admin, "/ready").await;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            v["workers"].as_array().is_some_and(|w| {
                w.len() == 2
                    && w.iter()
                        .all(|w| w["serving"] == true && w["breaker"] == "closed")
            })
        })
        .await;
        reached.then(|| started.elapsed())
    }
}

/// Takes the stack down when the test ends, however it ends.
struct Down(Stack);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = self.0.script("down");
    }
}

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Speaks once; the error, if any.
async fn speak(ws_url: &str) -> Result<usize, ClientError> {
    let mut client = Client::connect(ws_url).await?;
    client.timeout = Duration::from_secs(30);
    let u = client
        .synthesize(TEXT, &SynthesizeOptions::default())
        .await?;
    assert_eq!(u.report.integrity_failures(), 0, "every frame verifies");
    Ok(u.report.frames as usize)
}

/// Clients speaking one request after another until stopped: how many
/// completed and, by error code, how many did not.
struct Load {
    completed: Arc<AtomicUsize>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    stop: tokio_util::sync::CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(ws_url: &str, clients: usize) -> Self {
        let completed = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = tokio_util::sync::CancellationToken::new();
        let tasks = (0..clients)
            .map(|_| {
                let (url, done, errs, stop) = (
                    ws_url.to_owned(),
                    Arc::clone(&completed),
                    Arc::clone(&errors),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    while !stop.is_cancelled() {
                        match speak(&url).await {
                            Ok(_) => {
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                if let Ok(mut v) = errs.lock() {
                                    v.push(e.to_string());
                                }
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Self {
            completed,
            errors,
            stop,
            tasks,
        }
    }

    /// Lets each client finish its request, then reports.
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(60), t).await;
        }
        let errors = self.errors.lock().map(|v| v.clone()).unwrap_or_default();
        (self.completed.load(Ordering::Relaxed), errors)
    }

    fn completed(&self) -> usize {
        self.completed.load(Ordering::Relaxed)
    }
}

/// The orchestrator's count of a series, from its `/metrics`.
async fn orchestrator_metric(admin: SocketAddr, series: &str) -> f64 {
    let (_, text) = http_get(admin, "/metrics").await;
    tts_tests::sample(&text, series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_stack_runs_and_survives_its_faults() {
    let stack = Stack {
        project: format!("tts-test-{}", std::process::id()),
        ws: ([127, 0, 0, 1], free_port()).into(),
        admin: ([127, 0, 0, 1], free_port()).into(),
        prometheus: ([127, 0, 0, 1], free_port()).into(),
    };
    let _down = Down(stack.clone());
    let started = Instant::now();
    let up = tokio::task::spawn_blocking({
        let s = stack.clone();
        move || s.script("up")
    })
    .await
    .expect("join");
    let log = String::from_utf8_lossy(&up.stderr).into_owned();
    if !up.status.success() && log.contains("dockerd did not start") {
        eprintln!("SKIPPED: no container engine can run on this machine:\n{log}");
        return;
    }
    assert!(up.status.success(), "stack.sh up failed:\n{log}");
    eprintln!(
        "{log}stack up and healthy in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    shipped_stack_serves(&stack).await;
    killed_worker_fails_over(&stack).await;
    partitioned_worker_is_noticed(&stack).await;
    rolling_restart_loses_nothing(&stack).await;
    redis_restart_degrades_then_heals(&stack).await;
    orchestrator_restart_is_retried(&stack).await;

    let down = stack.script("down");
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    let (_, left) = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=com.docker.compose.project={}", stack.project),
        "-q",
    ]);
    assert!(left.trim().is_empty(), "containers left: {left}");
}

async fn shipped_stack_serves(stack: &Stack) {
    let frames = speak(&stack.ws_url())
        .await
        .expect("speech through the published port");
    assert!(frames > 50, "{frames} frames");

    let body = r#"{"model":"tts-1","voice":"alloy","input":"Hello from the stack."}"#;
    let answer = http_post(stack.ws, "/v1/audio/speech", body, &[]).await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    // OpenAI's default format, MP3: frames start with an 11-bit sync word.
    assert_eq!((answer.body[0], answer.body[1] & 0xe0), (0xff, 0xe0));
    assert!(answer.headers.contains("audio/mpeg"), "{}", answer.headers);
    assert!(answer.body.len() > 5_000, "{} bytes", answer.body.len());

    // doctor health from inside the stack, where the workers' names resolve.
    let (ok, report) = stack.compose(&[
        "exec",
        "-T",
        "orchestrator",
        "tts-client",
        "doctor",
        "health",
        "--orchestrator",
        "http://127.0.0.1:8081",
        "--json",
    ]);
    assert!(ok, "doctor health: {report}");
    let report: serde_json::Value = serde_json::from_str(&report).expect("JSON report");
    assert_eq!(report["status"], "ok", "{report}");
    let workers = report["checks"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter(|c| c["check"] == "worker gRPC health" && c["status"] == "ok")
                .count()
        })
        .unwrap_or(0);
    assert_eq!(workers, 2, "{report}");

    // Prometheus: every target up, the rules loaded.
    let prometheus = stack.prometheus;
    let up = eventually(Duration::from_secs(60), || async move {
        let (_, body) = http_get(prometheus, "/api/v1/targets").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let targets = v["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        targets.len() == 3 && targets.iter().all(|t| t["health"] == "up")
    })
    .await;
    assert!(up, "every Prometheus target up");
    let (_, rules) = http_get(prometheus, "/api/v1/rules").await;
    let rules: serde_json::Value = serde_json::from_str(&rules).expect("rules JSON");
    let groups = rules["data"]["groups"].as_array().map_or(0, Vec::len);
    assert!(
        groups >= 3,
        "the repository's rule groups are loaded: {groups}"
    );
}

async fn killed_worker_fails_over(stack: &Stack) {
    // As many streams as one worker takes on this machine's two cores.
    let load = Load::start(&stack.ws_url(), 2);
    let ws = stack.ws;
    let admin = stack.admin;
    assert!(
        eventually(Duration::from_secs(30), || async move {
            orchestrator_metric(admin, "tts_orchestrator_inflight_requests").await >= 2.0
        })
        .await,
        "traffic flows"
    );
    let before = load.completed();
    let unavailable_before = orchestrator_metric(
        admin,
        r#"tts_orchestrator_requests_total{outcome="failed",code="worker_unavailable"}"#,
    )
    .await;
    let killed_at = Instant::now();
    let (ok, out) = docker(&["kill", &stack.container("worker-1")]);
    assert!(ok, "{out}");
    // Requests after the kill complete on the other worker.
    assert!(
        eventually(Duration::from_secs(30), || {
            let done = load.completed();
            async move { done >= before + 4 }
        })
        .await,
        "requests complete on the surviving worker"
    );
    let failover = killed_at.elapsed();
    let (completed, errors) = load.finish().await;
    let lost = orchestrator_metric(
        admin,
        r#"tts_orchestrator_requests_total{outcome="failed",code="worker_unavailable"}"#,
    )
    .await
        - unavailable_before;
    assert!(
        errors.iter().all(|e| e.contains("worker_unavailable")),
        "only streams on the killed worker fail, as worker_unavailable: {errors:?}"
    );
    assert!(lost as usize >= errors.len().min(1), "{lost} counted");
    eprintln!(
        "worker killed: {} of the streams on it ended worker_unavailable; {completed} completed; \
         service restored {:.1} s after the kill",
        errors.len(),
        failover.as_secs_f64()
    );
    // It comes back (its restart policy, or a start) and is used again.
    let id = stack.container("worker-1");
    let (_, running) = docker(&["inspect", "-f", "{{.State.Running}}", &id]);
    if running.trim() != "true" {
        let (ok, out) = stack.compose(&["start", "worker-1"]);
        assert!(ok, "{out}");
    }
    let back = stack.until_ready("healthy", Duration::from_secs(120)).await;
    assert!(back.is_some(), "the killed worker rejoins");
    let used_again = eventually(Duration::from_secs(60), || async {
        let _ = speak(&format!("ws://{ws}/ws")).await;
        let ready = stack.ready().await;
        ready["workers"].as_array().is_some_and(|w| {
            w.len() == 2
                && w.iter()
                    .all(|w| w["serving"] == true && w["breaker"] == "closed")
        })
    })
    .await;
    assert!(
        used_again,
        "both workers serve again: {}",
        stack.ready().await
    );
}

async fn partitioned_worker_is_noticed(stack: &Stack) {
    let network = format!("{}_default", stack.project);
    let worker = stack.container("worker-2");
    let load = Load::start(&stack.ws_url(), 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, out) = docker(&["network", "disconnect", &network, &worker]);
    assert!(ok, "{out}");
    let noticed = stack.until_ready("degraded", Duration::from_secs(10)).await;
    let before = load.completed();
    assert!(
        eventually(Duration::from_secs(30), || {
            let done = load.completed();
            async move { done >= before + 3 }
        })
        .await,
        "requests keep completing on the other worker"
    );
    // Back on the network under its service name, as compose put it there.
    let (ok, out) = docker(&[
        "network", "connect", "--alias", "worker-2", &network, &worker,
    ]);
    assert!(ok, "{out}");
    let rejoined = stack.both_serving(Duration::from_secs(60)).await;
    let (completed, errors) = load.finish().await;
    let noticed = noticed.expect("/ready turns degraded");
    eprintln!(
        "worker partitioned: /ready degraded after {:.1} s; {completed} completed, {} failed \
         (streams on it when cut off); rejoined {:.1} s after reconnecting",
        noticed.as_secs_f64(),
        errors.len(),
        rejoined.map_or(f64::NAN, |d| d.as_secs_f64())
    );
    assert!(
        noticed <= Duration::from_secs(5),
        "noticed within 5 s: {noticed:?}"
    );
    assert!(rejoined.is_some(), "the worker rejoins when reconnected");
}

async fn rolling_restart_loses_nothing(stack: &Stack) {
    assert!(stack.both_serving(Duration::from_secs(60)).await.is_some());
    // One client back to back: on two cores shared by both workers, a
    // restarting worker's warm-up takes the CPU the other admits by, and
    // a second stream may be refused (`overloaded`) meanwhile.
    let load = Load::start(&stack.ws_url(), 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    for worker in ["worker-1", "worker-2"] {
        // SIGTERM, drain (the worker finishes its streams), start again.
        let (ok, out) = stack.compose(&["restart", "-t", "30", worker]);
        assert!(ok, "{out}");
        assert!(
            stack.both_serving(Duration::from_secs(120)).await.is_some(),
            "{worker} back, and both workers serve before the next restart"
        );
    }
    let (completed, errors) = load.finish().await;
    eprintln!(
        "rolling restart of both workers: {completed} requests completed, {} failed",
        errors.len()
    );
    assert!(completed > 0);
    assert!(
        errors.is_empty(),
        "no request fails in a rolling restart: {errors:?}"
    );
}

async fn redis_restart_degrades_then_heals(stack: &Stack) {
    let started_at = |service: &str| {
        let (_, at) = docker(&[
            "inspect",
            "-f",
            "{{.State.StartedAt}}",
            &stack.container(service),
        ]);
        at.trim().to_owned()
    };
    let ours = ["orchestrator", "worker-1", "worker-2"];
    let before: Vec<String> = ours.iter().map(|s| started_at(s)).collect();
    let (ok, out) = stack.compose(&["stop", "-t", "1", "redis"]);
    assert!(ok, "{out}");
    let degraded = stack.until_ready("degraded", Duration::from_secs(30)).await;
    let (ok, out) = stack.compose(&["start", "redis"]);
    assert!(ok, "{out}");
    let healthy = stack.until_ready("healthy", Duration::from_secs(60)).await;
    eprintln!(
        "Redis restarted: degraded after {:.1} s, healthy {:.1} s after its start",
        degraded.map_or(f64::NAN, |d| d.as_secs_f64()),
        healthy.map_or(f64::NAN, |d| d.as_secs_f64())
    );
    assert!(degraded.is_some() && healthy.is_some());
    let after: Vec<String> = ours.iter().map(|s| started_at(s)).collect();
    assert_eq!(before, after, "none of our services restarted");
    speak(&stack.ws_url())
        .await
        .expect("speech after Redis returned");
}

async fn orchestrator_restart_is_retried(stack: &Stack) {
    let restarted = Instant::now();
    let (ok, out) = stack.compose(&["restart", "-t", "15", "orchestrator"]);
    assert!(ok, "{out}");
    let ready = stack.until_ready("healthy", Duration::from_secs(60)).await;
    let back = restarted.elapsed();
    assert!(ready.is_some(), "/ready returns");
    eprintln!(
        "orchestrator restarted: /ready healthy {:.1} s after the restart began",
        back.as_secs_f64()
    );
    // A client started while the orchestrator is down retries its
    // connection until it is back.
    let (ok, out) = stack.compose(&["stop", "-t", "15", "orchestrator"]);
    assert!(ok, "{out}");
    let client = tokio::task::spawn_blocking({
        let url = stack.ws_url();
        move || {
            Command::new(tts_tests::binary("tts-client"))
                .args(["--url", &url, "say", TEXT, "--out"])
                .arg(std::env::temp_dir().join("stack-retry.wav"))
                .output()
                .expect("tts-client runs")
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ok, out) = stack.compose(&["start", "orchestrator"]);
    assert!(ok, "{out}");
    let out = client.await.expect("join");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tts-client retried its connection: {said}"
    );
    // Whether it was refused first depends on how fast the engine frees
    // and takes the port back; the reconnect itself is tested on loopback
    // (the_client_reconnects_until_the_orchestrator_answers.rs).
    eprintln!(
        "client started while the orchestrator was stopped: spoke after {} reconnects",
        said.matches("reconnecting in").count()
    );
}
