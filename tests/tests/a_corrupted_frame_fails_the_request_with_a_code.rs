//! A frame corrupted between worker and orchestrator (an injected
//! `corrupt_frames` fault flips a byte after the worker computed the
//! checksum) is counted as a checksum mismatch, and the request fails with
//! a coded error.

use std::time::Duration;
use tts_client::{Client, ClientError, ErrorCode, SynthesizeOptions};
use tts_orchestrator::OrchestratorConfig;

use tts_telemetry::faults::Fault;
use tts_tests::{
    fault_registry, http_get, sample, spawn_orchestrator_metered, spawn_worker, worker_config,
};
use tts_worker::WorkerConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_frame_fails_the_request_with_a_code() {
    let metrics = tts_telemetry::install_metrics().expect("recorder");
    let faults = fault_registry();
    let worker = spawn_worker(WorkerConfig {
        faults: Some(faults.clone()),
        ..worker_config()
    })
    .await;
    faults
        .start(Fault::CorruptFrames { every: 6 }, Duration::from_secs(600))
        .expect("fault starts");
    let pipeline = spawn_orchestrator_metered(
        format!("http://{}", worker.addr),
        OrchestratorConfig::default(),
        Some(metrics),
    )
    .await;
    let mut client = Client::connect(&pipeline.ws_url).await.expect("connect");
    let err = client
        .synthesize(
            "This sentence is long enough to reach frame five.",
            &SynthesizeOptions::default(),
        )
        .await
        .expect_err("the corrupted frame fails the request");
    match err {
        ClientError::Server { code, message } => {
            assert_eq!(code, ErrorCode::Internal);
            assert!(message.contains("checksum"), "{message}");
            assert!(message.contains("frame 5"), "{message}");
        }
        other => panic!("expected a server error, got {other}"),
    }
    let (_, text) = http_get(pipeline.admin, "/metrics").await;
    let mismatches = sample(
        &text,
        r#"tts_orchestrator_frames_total{hop="worker_to_orchestrator",result="checksum_mismatch"}"#,
    );
    assert_eq!(mismatches, 1.0);
    assert_eq!(
        sample(
            &text,
            r#"tts_orchestrator_requests_total{outcome="failed",code="internal"}"#
        ),
        1.0
    );
    // Frames 0–4 were good and were delivered; none after the bad one.
    assert_eq!(
        sample(
            &text,
            r#"tts_orchestrator_frames_total{hop="worker_to_orchestrator",result="ok"}"#
        ),
        5.0
    );
    // The connection is still usable.
    assert!(client.ping(1).await.is_ok());

    drop(client);
    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
