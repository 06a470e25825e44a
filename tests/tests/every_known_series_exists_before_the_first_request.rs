//! A freshly started pipeline, before any request, already exposes every
//! series it knows at 0 (or its current state): each request outcome and
//! error code, each frame result per hop, each quality kind, each refusal
//! and close reason, the scheduler's, the worker's and readiness state. A
//! dashboard shows 0 instead of "no data", and `rate()` and `increase()`
//! see the first fault.

use tts_orchestrator::OrchestratorConfig;
use tts_protocol::ErrorCode;
use tts_tests::{eventually, http_get, spawn_orchestrator_metered, spawn_worker, worker_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_known_series_exists_before_the_first_request() {
    let metrics = tts_telemetry::install_metrics().expect("recorder");
    let worker = spawn_worker(worker_config()).await;
    let pipeline = spawn_orchestrator_metered(
        format!("http://{}", worker.addr),
        OrchestratorConfig::default(),
        Some(metrics),
    )
    .await;

    let mut expected: Vec<String> = Vec::new();
    for (outcome, code) in [
        ("completed", "none"),
        ("cancelled", "none"),
        ("disconnected", "none"),
    ] {
        expected.push(format!(
            r#"tts_orchestrator_requests_total{{outcome="{outcome}",code="{code}"}} 0"#
        ));
    }
    for code in ErrorCode::ALL {
        expected.push(format!(
            r#"tts_orchestrator_requests_total{{outcome="{}",code="{}"}} 0"#,
            code.outcome().as_str(),
            code.as_str()
        ));
    }
    for result in ["ok", "bad_size", "out_of_sequence", "checksum_mismatch"] {
        expected.push(format!(
            r#"tts_orchestrator_frames_total{{hop="worker_to_orchestrator",result="{result}"}} 0"#
        ));
        expected.push(format!(
            r#"tts_worker_frames_total{{hop="worker",result="{result}"}} 0"#
        ));
    }
    for result in ["ok", "dropped"] {
        expected.push(format!(
            r#"tts_orchestrator_frames_total{{hop="orchestrator_to_client",result="{result}"}} 0"#
        ));
    }
    for kind in ["clipping", "dc_offset", "dead_air", "leading_silence"] {
        expected.push(format!(
            r#"tts_orchestrator_frame_quality_events_total{{kind="{kind}"}} 0"#
        ));
        expected.push(format!(
            r#"tts_worker_frame_quality_events_total{{kind="{kind}"}} 0"#
        ));
    }
    for reason in [
        "capacity",
        "per_address",
        "handshake_timeout",
        "tls",
        "auth",
        "origin",
    ] {
        expected.push(format!(
            r#"tts_orchestrator_connections_refused_total{{reason="{reason}"}} 0"#
        ));
    }
    for code in [1000, 1001, 1007, 1008, 1009] {
        expected.push(format!(
            r#"tts_orchestrator_server_closes_total{{code="{code}"}} 0"#
        ));
    }
    for kind in ["control", "last", "close"] {
        expected.push(format!(
            r#"tts_orchestrator_messages_dropped_total{{kind="{kind}"}} 0"#
        ));
    }
    for outcome in [
        "completed",
        "cancelled",
        "client_error",
        "refused",
        "failed",
    ] {
        expected.push(format!(
            r#"tts_worker_requests_total{{outcome="{outcome}"}} 0"#
        ));
    }
    for kind in ["first_audio", "playout"] {
        expected.push(format!(
            r#"tts_worker_deadline_misses_total{{kind="{kind}"}} 0"#
        ));
    }
    expected.extend(
        [
            "tts_worker_stalled_streams_total 0",
            "tts_worker_admission_utilisation 0",
            "tts_worker_inflight_requests 0",
            "tts_orchestrator_inflight_requests 0",
            "tts_orchestrator_websocket_connections 0",
            "tts_orchestrator_websocket_connections_total 0",
        ]
        .map(String::from),
    );
    // State, as it is: the worker serves, so the watcher says so.
    expected.extend(
        [
            "tts_orchestrator_worker_serving 1",
            "tts_orchestrator_ready 1",
            r#"tts_worker_voice_streaming{voice="en_US-joe-medium"} 1"#,
        ]
        .map(String::from),
    );

    let admin = pipeline.admin;
    let missing_in = |text: &str| {
        expected
            .iter()
            .filter(|series| !text.lines().any(|l| l == series.as_str()))
            .cloned()
            .collect::<Vec<_>>()
    };
    // The state watcher first reports within two seconds.
    eventually(std::time::Duration::from_secs(10), || async move {
        let (_, text) = http_get(admin, "/metrics").await;
        text.lines().any(|l| l == "tts_orchestrator_ready 1")
    })
    .await;
    let (_, text) = http_get(admin, "/metrics").await;
    let missing = missing_in(&text);
    assert!(
        missing.is_empty(),
        "missing before the first request: {missing:#?}"
    );
    let (_, text) = http_get(admin, "/metrics").await;
    assert!(text.contains(r#"tts_worker_compute_per_audio_second{voice="en_US-joe-medium"}"#));
    // The autoscaling signal is there from start-up: all of the real-time
    // capacity is headroom while nothing is admitted.
    let capacity = tts_tests::sample(&text, "tts_worker_realtime_capacity");
    let headroom = tts_tests::sample(&text, "tts_worker_realtime_headroom");
    assert!(capacity > 0.0, "capacity {capacity}");
    assert_eq!(headroom, capacity, "headroom before any request");
    tts_tests::promtool_check_metrics(&text);
    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
