//! Each `doctor` command runs against a live pipeline that has served
//! traffic in every encoding (so every histogram has samples, the negative
//! dBFS and slack buckets included) and its JSON says what it found;
//! pointed at nothing, `doctor health` fails.

use tts_client::doctor::{self, Status};
use tts_orchestrator::OrchestratorConfig;
use tts_tests::{
    RedisServer, free_port, http_get, promtool_check_metrics, serve_traffic,
    spawn_orchestrator_metered, spawn_worker, worker_config,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_commands_report_on_a_live_pipeline() {
    let metrics = tts_telemetry::install_metrics().expect("recorder");
    let redis = RedisServer::start().await;
    let worker = spawn_worker(worker_config()).await;
    let config = OrchestratorConfig {
        redis_url: Some(redis.url.clone()),
        ..OrchestratorConfig::default()
    };
    let pipeline =
        spawn_orchestrator_metered(format!("http://{}", worker.addr), config, Some(metrics)).await;
    assert!(serve_traffic(&pipeline.ws_url).await > 100);
    // What the doctor reads next is what Prometheus reads: valid for
    // promtool, negative buckets with their sums and all.
    let (code, exposition) = http_get(pipeline.admin, "/metrics").await;
    assert_eq!(code, 200);
    assert!(exposition.contains("tts_orchestrator_frame_level_dbfs_sum"));
    promtool_check_metrics(&exposition);

    let targets = doctor::health::Targets {
        orchestrator: format!("http://{}", pipeline.admin),
        worker: None,
        worker_metrics: Some(format!("http://127.0.0.1:{}/metrics", free_port())),
        url: Some(pipeline.ws_url.clone()),
        redis: Some(redis.url.clone()),
    };
    let health = doctor::health::run(&targets).await;
    let checks = health.detail["checks"].as_array().expect("checks");
    let status_of = |name: &str| {
        checks
            .iter()
            .find(|c| c["check"] == name)
            .map(|c| c["status"].clone())
            .unwrap_or_else(|| panic!("no {name} row: {checks:?}"))
    };
    assert_eq!(status_of("orchestrator /health"), "ok");
    assert_eq!(status_of("orchestrator /ready"), "ok");
    assert_eq!(status_of("ready: redis"), "ok");
    assert_eq!(
        status_of("worker gRPC health"),
        "ok",
        "found from the orchestrator's /info"
    );
    assert_eq!(status_of("worker device"), "ok");
    let device = checks
        .iter()
        .find(|c| c["check"] == "worker device")
        .map(|c| c["detail"].to_string())
        .unwrap_or_default();
    assert!(device.contains(": cpu, "), "{device}");
    assert_eq!(status_of("redis PING"), "ok");
    assert_eq!(status_of("listening: websocket port"), "ok");
    assert_eq!(
        status_of("worker /metrics"),
        "warn",
        "nothing listens there"
    );
    assert_eq!(status_of("orchestrator /metrics"), "ok");
    assert_eq!(status_of("checksum mismatches"), "ok");
    assert_eq!(health.status, Status::Warn, "{}", health.to_table());
    assert_eq!(health.exit_code(69), 0);

    let rtt = doctor::rtt::run(&pipeline.ws_url, 5).await.expect("rtt");
    assert_eq!(rtt.status, Status::Ok);
    for path in ["websocket", "deep", "worker_grpc"] {
        let p = &rtt.detail[path];
        assert_eq!(p["count"], 5, "{path}: {p}");
        let (min, p50, p99, max) = (
            p["min"].as_f64(),
            p["p50"].as_f64(),
            p["p99"].as_f64(),
            p["max"].as_f64(),
        );
        assert!(
            min > Some(0.0) && min <= p50 && p50 <= p99 && p99 <= max,
            "{path}: {p}"
        );
    }
    assert!(rtt.detail["deep"]["p50"].as_f64() >= rtt.detail["worker_grpc"]["p50"].as_f64());

    let frames = doctor::frames::run(&pipeline.ws_url, doctor::frames::PROBE_TEXT)
        .await
        .expect("frames");
    assert_ne!(frames.status, Status::Fail, "{}", frames.to_table());
    let list = frames.detail["frames"].as_array().expect("frames");
    assert!(list.len() > 50, "{} frames", list.len());
    assert!(list.iter().all(|f| f["verified"] == true));
    assert!(
        list.iter()
            .any(|f| f["silent"] == false && f["rms_dbfs"].as_f64() > Some(-30.0))
    );
    assert_eq!(frames.detail["integrity_failures"], 0);
    assert_eq!(frames.rows.len(), list.len(), "one table row per frame");

    // Redis goes away: readiness degrades, doctor health says so.
    drop(redis);
    let degraded = doctor::health::run(&targets).await;
    let checks = degraded.detail["checks"].as_array().expect("checks");
    let redis_row = checks
        .iter()
        .find(|c| c["check"] == "redis PING")
        .expect("row");
    assert_eq!(redis_row["status"], "fail");
    assert_eq!(degraded.exit_code(69), 69);

    pipeline.orchestrator.stop().await;
    worker.stop().await;

    let nothing = doctor::health::Targets {
        orchestrator: format!("http://127.0.0.1:{}", free_port()),
        worker: Some(format!("http://127.0.0.1:{}", free_port())),
        worker_metrics: Some(format!("http://127.0.0.1:{}/metrics", free_port())),
        url: Some(format!("ws://127.0.0.1:{}/ws", free_port())),
        redis: None,
    };
    let down = doctor::health::run(&nothing).await;
    assert_eq!(down.status, Status::Fail);
    assert_eq!(down.exit_code(69), 69);
}
