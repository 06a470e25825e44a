//! After a request, both processes' metrics moved by exactly what the client
//! received; histograms have buckets (not summaries); both scrapes pass
//! `promtool check metrics`.

use tokio::net::TcpListener;
use tts_client::{Client, SynthesizeOptions};
use tts_orchestrator::OrchestratorConfig;
use tts_tests::{
    http_get, promtool_check_metrics, sample, spawn_orchestrator_metered, spawn_worker,
    worker_config,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_client_received() {
    let metrics = tts_telemetry::install_metrics().expect("recorder");
    // Histogram samples are folded into their buckets even when no one
    // scrapes: a thread does it (otherwise they pile up in memory).
    let threads: Vec<String> = std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect();
    assert!(
        threads
            .iter()
            .any(|t| t == tts_telemetry::metrics::UPKEEP_THREAD),
        "no upkeep thread among {threads:?}"
    );
    let worker = spawn_worker(worker_config()).await;
    let worker_metrics = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let worker_metrics_addr = worker_metrics.local_addr().expect("addr");
    tokio::spawn(tts_telemetry::serve_metrics(
        worker_metrics,
        metrics.clone(),
        axum::Router::new(),
        tts_telemetry::AdminConfig::default().limits(),
        std::future::pending(),
    ));
    let pipeline = spawn_orchestrator_metered(
        format!("http://{}", worker.addr),
        OrchestratorConfig::default(),
        Some(metrics),
    )
    .await;

    let mut client = Client::connect(&pipeline.ws_url).await.expect("connect");
    let u = client
        .synthesize(
            "Count every frame of this sentence.",
            &SynthesizeOptions::default(),
        )
        .await
        .expect("synthesis");
    let frames = u.report.frames as f64;
    assert!(frames > 20.0);

    let (status, text) = http_get(pipeline.admin, "/metrics").await;
    assert_eq!(status, 200);
    let got = |series: &str| sample(&text, series);
    assert_eq!(
        got(r#"tts_orchestrator_frames_total{hop="orchestrator_to_client",result="ok"}"#),
        frames
    );
    assert_eq!(
        got(r#"tts_orchestrator_frames_total{hop="worker_to_orchestrator",result="ok"}"#),
        frames
    );
    assert_eq!(
        got(r#"tts_worker_frames_total{hop="worker",result="ok"}"#),
        frames
    );
    assert_eq!(
        got(r#"tts_orchestrator_requests_total{outcome="completed",code="none"}"#),
        1.0
    );
    assert_eq!(
        got(r#"tts_worker_requests_total{outcome="completed"}"#),
        1.0
    );
    assert_eq!(
        got("tts_orchestrator_time_to_first_audio_seconds_count"),
        1.0
    );
    assert_eq!(got("tts_worker_time_to_first_audio_seconds_count"), 1.0);
    assert_eq!(got("tts_orchestrator_relay_latency_seconds_count"), frames);
    assert_eq!(
        got("tts_orchestrator_worker_hop_latency_seconds_count"),
        frames
    );
    assert_eq!(
        got("tts_orchestrator_frame_gap_seconds_count"),
        frames - 1.0
    );
    assert!(got("tts_worker_step_seconds_count") >= 1.0);
    assert_eq!(got("tts_orchestrator_websocket_connections"), 1.0);
    assert_eq!(got(r#"tts_orchestrator_build_info{version="0.1.0"}"#), 1.0);
    assert!(got("process_resident_memory_bytes") > 1e6);
    assert!(
        text.contains(r#"tts_orchestrator_frame_gap_seconds_bucket{le="0.02"}"#),
        "buckets at the 20 ms target"
    );
    assert!(text.contains(r#"tts_orchestrator_time_to_first_audio_seconds_bucket{le="0.17"}"#));
    assert!(
        !text.contains("quantile="),
        "a histogram was rendered as a summary"
    );
    promtool_check_metrics(&text);

    let (status, worker_text) = http_get(worker_metrics_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(worker_text.contains("tts_worker_synthesis_real_time_factor_bucket"));
    promtool_check_metrics(&worker_text);

    drop(client);
    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
