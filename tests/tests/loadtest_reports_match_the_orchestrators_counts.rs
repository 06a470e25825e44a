//! A short closed-loop, a short open-loop and a short streamed-input run
//! against a live pipeline: all complete, their JSON reports pass
//! `loadtest/schema.json`, and what they counted equals what the
//! orchestrator's metrics counted.

use std::time::Duration;

use tts_loadtest::corpus::{Mix, builtin};
use tts_loadtest::run::{Limit, Mode, RunConfig, run};
use tts_orchestrator::OrchestratorConfig;
use tts_tests::{
    http_get, repo_root, sample, spawn_orchestrator_metered, spawn_worker, worker_config,
};

fn config(url: &str, mode: Mode, requests: u64) -> RunConfig {
    RunConfig {
        url: url.to_owned(),
        mode,
        limit: Limit::Requests(requests),
        ramp_up: Duration::from_millis(200),
        requests_per_connection: 2,
        texts: builtin(Mix::Short),
        voice: None,
        buffers: [20, 60, 120].map(Duration::from_millis).to_vec(),
        ping_interval: Duration::from_millis(50),
        request_timeout: Duration::from_secs(30),
        max_outstanding: 64,
        ..RunConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_reports_match_the_orchestrators_counts() {
    let metrics = tts_telemetry::install_metrics().expect("recorder");
    // Counting is under test, not admission: on a loaded machine the
    // worker could otherwise refuse some of these requests.
    let worker = spawn_worker(tts_worker::WorkerConfig {
        admission: false,
        ..worker_config()
    })
    .await;
    let pipeline = spawn_orchestrator_metered(
        format!("http://{}", worker.addr),
        OrchestratorConfig::default(),
        Some(metrics),
    )
    .await;
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("loadtest/schema.json")).expect("schema"),
    )
    .expect("schema JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");

    let mut frames = 0;
    let mut completed = 0;
    for (mode, requests, stream_input) in [
        (Mode::Closed { concurrency: 2 }, 6, false),
        (
            Mode::Open {
                rate: 4.0,
                poisson: true,
            },
            4,
            false,
        ),
        (Mode::Closed { concurrency: 2 }, 4, true),
    ] {
        let mut cfg = config(&pipeline.ws_url, mode, requests);
        if stream_input {
            // Word by word; the first sentence is complete at "The".
            cfg.stream_input = Some(Duration::from_millis(30));
            cfg.texts = vec!["Short words come first. The rest follows later on.".into()];
        }
        let (agg, wall) = run(&cfg, |_| {}).await;
        let report = agg.report(cfg.to_json("short"), wall);
        let json = serde_json::to_value(&report).expect("serialise");
        let errors: Vec<String> = validator
            .iter_errors(&json)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{mode:?}: report does not match the schema: {errors:?}"
        );
        assert_eq!(report.requests.sent, requests, "{mode:?}");
        assert_eq!(
            report.requests.completed, requests,
            "{mode:?}: {:?}",
            report.requests.errors
        );
        assert_eq!(report.integrity.failures(), 0, "{mode:?}");
        assert_eq!(
            report.integrity.frames_expected,
            report.integrity.frames_received
        );
        assert_eq!(report.latency_ms.ttfa.count, requests);
        assert!(report.latency_ms.rtt.count > 0, "the ping side channel ran");
        assert!(
            report.latency_ms.ttfa.p50 > 0.0
                && report.latency_ms.ttfa.p50 <= report.latency_ms.ttfa.p99
        );
        assert!(report.audio_seconds > 0.5 * requests as f64);
        let after_text = report.latency_ms.first_audio_after_text;
        if stream_input {
            // Timed from the completing piece, which was sent after the
            // context opened: shorter than the time to first audio.
            assert_eq!(after_text.count, requests);
            assert!(
                after_text.p50 > 0.0 && after_text.p50 < report.latency_ms.ttfa.p50,
                "{after_text:?} against {:?}",
                report.latency_ms.ttfa
            );
        } else {
            assert_eq!(after_text.count, 0);
        }
        frames += report.integrity.frames_received;
        completed += report.requests.completed;
    }

    let (_, text) = http_get(pipeline.admin, "/metrics").await;
    assert_eq!(
        sample(
            &text,
            r#"tts_orchestrator_frames_total{hop="orchestrator_to_client",result="ok"}"#
        ),
        frames as f64,
        "frames the loadtester received = frames the orchestrator sent"
    );
    assert_eq!(
        sample(
            &text,
            r#"tts_orchestrator_requests_total{outcome="completed",code="none"}"#
        ),
        completed as f64
    );

    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
