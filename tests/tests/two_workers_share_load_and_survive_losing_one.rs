//! Two worker processes behind one orchestrator process.
//!
//! - Eight concurrent requests spread over both by load.
//! - A worker killed under load costs only the streams it had started
//!   (`worker_unavailable`, never repeated audio); every other request
//!   completes with verified frames.
//! - Its breaker opens (metrics, `/ready`, `doctor health`); a request
//!   sent to it before its first frame moves to the other worker.
//! - Once it is back, a probe closes the breaker again.

use std::time::Duration;

use serde_json::Value;
use tts_client::doctor;
use tts_client::{Client, ClientError, ErrorCode, SynthesizeOptions, Utterance};
use tts_tests::{ServiceProcess, eventually, free_port, http_get, sample};

const SHORT: &str = "The early bird catches the worm.";
/// The orchestrator's `--breaker-cooldown-secs`: how long an open breaker
/// waits before it lets a probe through.
const BREAKER_COOLDOWN: Duration = Duration::from_secs(1);
/// About eight seconds of speech: still playing when the worker dies.
const MEDIUM: &str = "The telephone was not invented by one person alone. Several inventors \
    worked on the idea at the same time, in different countries, and each of them believed \
    that he was the first.";

async fn say(ws: &str, text: &str) -> Result<Utterance, ClientError> {
    let mut client = Client::connect(ws).await?;
    client.timeout = Duration::from_secs(60);
    client.synthesize(text, &SynthesizeOptions::default()).await
}

fn url(worker: &ServiceProcess) -> String {
    format!("http://{}", worker.addr)
}

async fn metrics(addr: std::net::SocketAddr) -> String {
    http_get(addr, "/metrics").await.1
}

async fn ready(orchestrator: &ServiceProcess) -> Value {
    let (_, body) = http_get(orchestrator.admin, "/ready").await;
    serde_json::from_str(&body).expect("/ready is JSON")
}

/// The orchestrator's view of one worker in `/ready`.
fn worker_in(ready: &Value, url: &str) -> Value {
    ready["workers"]
        .as_array()
        .and_then(|all| all.iter().find(|w| w["url"] == url))
        .cloned()
        .unwrap_or(Value::Null)
}

async fn both_serving(orchestrator: &ServiceProcess, urls: [&str; 2]) -> bool {
    eventually(Duration::from_secs(20), || async move {
        let r = ready(orchestrator).await;
        urls.iter().all(|u| worker_in(&r, u)["serving"] == true)
    })
    .await
}

fn assert_verified(u: &Utterance) {
    assert_eq!(u.report.integrity_failures(), 0, "{:?}", u.report);
    assert_eq!(u.report.frames, u.report.end_frames, "{:?}", u.report);
    assert!(u.report.last_flag_seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_requests_spread_over_two_workers_by_load() {
    // Admission off: this test is about routing. On a shared machine (the
    // other test of this file runs beside it) a worker may rightly refuse a
    // start it could not keep on time, which would leave fewer than eight
    // to count.
    let no_admission = ["--admission", "false"];
    let a = ServiceProcess::worker(&no_admission).await;
    let b = ServiceProcess::worker(&no_admission).await;
    let orchestrator = ServiceProcess::orchestrator(&url(&a), &["--worker", &url(&b)]).await;
    assert!(both_serving(&orchestrator, [&url(&a), &url(&b)]).await);
    let ws = format!("ws://{}/ws", orchestrator.addr);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let ws = ws.clone();
            tokio::spawn(async move { say(&ws, SHORT).await })
        })
        .collect();
    for task in tasks {
        assert_verified(&task.await.expect("task").expect("request completes"));
    }
    let completed = r#"tts_worker_requests_total{outcome="completed"}"#;
    let on_a = sample(&metrics(a.admin).await, completed);
    let on_b = sample(&metrics(b.admin).await, completed);
    eprintln!("requests: {on_a} on one worker, {on_b} on the other");
    assert_eq!(on_a + on_b, 8.0);
    assert!(
        on_a >= 3.0 && on_b >= 3.0,
        "eight requests at once are spread by load: {on_a} / {on_b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_costs_only_its_started_streams_and_its_breaker_opens_and_closes() {
    // Admission off, as above: a refusal of a busy machine would read as
    // the dead worker's doing.
    let no_admission = ["--admission", "false"];
    let a_port = free_port();
    let a = ServiceProcess::worker_on(a_port, &no_admission).await;
    let b = ServiceProcess::worker(&no_admission).await;
    let (url_a, url_b) = (url(&a), url(&b));
    let cooldown = BREAKER_COOLDOWN.as_secs().to_string();
    // Load polls so rare that routing keeps believing in the dead worker:
    // only the breaker and the retry stand between it and the clients.
    let orchestrator = ServiceProcess::orchestrator(
        &url_a,
        &[
            "--worker",
            &url_b,
            "--worker-poll-ms",
            "600000",
            "--breaker-failures",
            "2",
            "--breaker-cooldown-secs",
            &cooldown,
        ],
    )
    .await;
    assert!(both_serving(&orchestrator, [&url_a, &url_b]).await);
    let ws = format!("ws://{}/ws", orchestrator.addr);

    // Six long requests, then one worker dies under them.
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let ws = ws.clone();
            tokio::spawn(async move { say(&ws, MEDIUM).await })
        })
        .collect();
    let admin = orchestrator.admin;
    let streaming = eventually(Duration::from_secs(20), || async move {
        let m = metrics(admin).await;
        sample(&m, "tts_orchestrator_inflight_requests") == 6.0
            && sample(&m, "tts_orchestrator_time_to_first_audio_seconds_count") >= 6.0
    })
    .await;
    assert!(streaming, "the six requests were not all streaming");
    a.signal("KILL");
    drop(a);
    let (mut completed, mut lost) = (0, 0);
    for task in tasks {
        match task.await.expect("task") {
            Ok(u) => {
                assert_verified(&u);
                completed += 1;
            }
            Err(ClientError::Server { code, .. }) => {
                assert_eq!(code, ErrorCode::WorkerUnavailable);
                lost += 1;
            }
            Err(e) => panic!("a request ended without a code: {e}"),
        }
    }
    eprintln!("killed under load: {completed} completed, {lost} worker_unavailable");
    assert!(completed >= 2 && lost >= 2, "{completed} / {lost}");

    let breaker = format!(r#"tts_orchestrator_worker_breaker_state{{worker="{url_a}"}}"#);
    let m = metrics(orchestrator.admin).await;
    assert_eq!(sample(&m, &breaker), 2.0, "open:\n{m}");
    let r = ready(&orchestrator).await;
    assert_eq!(r["status"], "degraded", "{r}");
    // Open, or due its probe once the cool-down has passed.
    assert_ne!(worker_in(&r, &url_a)["breaker"], "closed", "{r}");
    assert_eq!(worker_in(&r, &url_b)["breaker"], "closed", "{r}");
    let targets = doctor::health::Targets {
        orchestrator: format!("http://{}", orchestrator.admin),
        ..Default::default()
    };
    let found = doctor::health::run(&targets).await;
    let rows = found.detail["checks"].as_array().expect("rows").clone();
    let row = rows
        .iter()
        .find(|c| c["check"] == format!("worker {url_a}"))
        .unwrap_or_else(|| panic!("no row for the dead worker: {rows:?}"));
    assert_eq!(row["status"], "warn", "{row}");
    assert!(
        row["detail"]
            .as_str()
            .is_some_and(|d| d.contains("breaker") && !d.contains("breaker closed")),
        "{row}"
    );

    // After the cool-down the breaker lets one probe through to the dead
    // worker: it fails before any audio and moves to the other worker.
    tokio::time::sleep(BREAKER_COOLDOWN + Duration::from_millis(200)).await;
    for _ in 0..4 {
        assert_verified(&say(&ws, SHORT).await.expect("moved, not lost"));
    }
    let m = metrics(orchestrator.admin).await;
    let retried = sample(
        &m,
        r#"tts_orchestrator_worker_retries_total{reason="worker_unavailable"}"#,
    );
    assert!(retried >= 1.0, "the probe was retried elsewhere:\n{m}");
    assert_eq!(sample(&m, &breaker), 2.0, "the failed probe reopened it");

    // The worker comes back where it was: a probe closes the breaker.
    let _a = ServiceProcess::worker_on(a_port, &no_admission).await;
    let closed = eventually(Duration::from_secs(30), || {
        let (ws, breaker) = (ws.clone(), breaker.clone());
        let admin = orchestrator.admin;
        async move {
            assert_verified(&say(&ws, SHORT).await.expect("request completes"));
            sample(&metrics(admin).await, &breaker) == 0.0
        }
    })
    .await;
    assert!(closed, "the breaker closes once the worker is back");
    let r = ready(&orchestrator).await;
    assert_eq!(worker_in(&r, &url_a)["breaker"], "closed", "{r}");
}
