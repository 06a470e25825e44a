//! Given only the orchestrator's admin address, `tts-client doctor health`
//! finds the WebSocket listener, the worker and the worker's metrics (all
//! on non-default ports) through the orchestrator's `/info`, and finds
//! them healthy, after the pipeline has served traffic in every encoding.

use std::process::Command;

use tts_tests::{ServiceProcess, binary, http_get, serve_traffic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_health_finds_the_pipeline_from_the_orchestrator_alone() {
    let worker = ServiceProcess::worker(&["--engine", "espeak"]).await;
    let orchestrator = ServiceProcess::orchestrator(&format!("http://{}", worker.addr), &[]).await;

    let ws_url = format!("ws://{}/ws", orchestrator.addr);
    assert!(serve_traffic(&ws_url).await > 50);

    let (status, body) = http_get(orchestrator.admin, "/info").await;
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        info["websocket_url"],
        format!("ws://{}/ws", orchestrator.addr)
    );
    assert_eq!(
        info["workers"][0]["metrics_url"],
        format!("http://{}/metrics", worker.admin)
    );
    assert_eq!(info["workers"][0]["url"], format!("http://{}", worker.addr));
    assert!(
        info["workers"][0]["voices"]
            .as_array()
            .is_some_and(|v| !v.is_empty())
    );

    let admin = format!("http://{}", orchestrator.admin);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(binary("tts-client"))
            .args(["doctor", "health", "--orchestrator", &admin, "--json"])
            .env_remove("TTS_URL")
            .env_remove("TTS_WORKER_URL")
            .output()
            .expect("tts-client runs")
    })
    .await
    .expect("join");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let checks = report["checks"].as_array().expect("checks");
    let status_of = |name: &str| {
        checks
            .iter()
            .find(|c| c["check"] == name)
            .map(|c| c["status"].clone())
            .unwrap_or_else(|| panic!("no {name} row: {report}"))
    };
    for check in [
        "orchestrator /info",
        "orchestrator /health",
        "orchestrator /ready",
        "worker gRPC health",
        "worker /metrics",
        "listening: websocket port",
        "listening: worker port",
    ] {
        assert_eq!(status_of(check), "ok", "{check}: {report}");
    }
    assert_eq!(report["status"], "ok", "{report}");
    assert_eq!(out.status.code(), Some(0));
}
