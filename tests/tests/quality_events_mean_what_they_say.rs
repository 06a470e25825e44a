//! Quality events fire on faults and only on faults: clean speech of
//! several sentences raises none; an injected +2000 DC offset, an injected
//! burst of clipping and an injected 800 ms dropout each raise exactly
//! their own kind, in the worker's metrics, the orchestrator's metrics and
//! `doctor frames`.

use std::collections::BTreeMap;

use tts_orchestrator::OrchestratorConfig;
use tts_telemetry::faults::Fault;
use tts_tests::{
    eventually, fault_registry, sample, spawn_orchestrator_metered, spawn_worker, worker_config,
};

/// Several sentences, about six seconds: pauses between words and
/// sentences included.
const TEXT: &str = "The quick brown fox jumps over the lazy dog. This is a streaming \
speech test. How are you today? I am fine, thank you.";

const KINDS: [&str; 4] = ["clipping", "dc_offset", "dead_air", "leading_silence"];

/// The quality event counts of one process's series, by kind.
fn counts(metrics: &tts_telemetry::MetricsHandle, name: &str) -> BTreeMap<&'static str, f64> {
    let text = metrics.render();
    KINDS
        .iter()
        .map(|kind| (*kind, sample(&text, &format!("{name}{{kind=\"{kind}\"}}"))))
        .collect()
}

fn delta(
    before: &BTreeMap<&'static str, f64>,
    after: &BTreeMap<&'static str, f64>,
) -> BTreeMap<&'static str, f64> {
    KINDS.iter().map(|k| (*k, after[k] - before[k])).collect()
}

/// Which kinds moved.
fn raised(counts: &BTreeMap<&'static str, f64>) -> Vec<&'static str> {
    counts
        .iter()
        .filter(|(_, n)| **n > 0.0)
        .map(|(k, _)| *k)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_events_mean_what_they_say() {
    let metrics = tts_telemetry::install_metrics().expect("recorder");
    let scenarios: [(&str, Option<Fault>, &[&str]); 4] = [
        ("clean", None, &[]),
        (
            "DC offset +2000",
            Some(Fault::DcOffset { offset: 2000 }),
            &["dc_offset"],
        ),
        (
            "clipping",
            Some(Fault::Clipping {
                from_ms: 1_000,
                len_ms: 200,
            }),
            &["clipping"],
        ),
        (
            "800 ms dropout",
            Some(Fault::DeadAir {
                from_ms: 1_500,
                len_ms: 800,
            }),
            &["dead_air"],
        ),
    ];
    for (name, fault, expected) in scenarios {
        let faults = fault_registry();
        let worker = spawn_worker(tts_worker::WorkerConfig {
            faults: Some(faults.clone()),
            ..worker_config()
        })
        .await;
        if let Some(fault) = fault {
            faults
                .start(fault, std::time::Duration::from_secs(600))
                .expect("fault starts");
        }
        let pipeline = spawn_orchestrator_metered(
            format!("http://{}", worker.addr),
            OrchestratorConfig::default(),
            Some(metrics.clone()),
        )
        .await;
        let (w0, o0) = (
            counts(&metrics, "tts_worker_frame_quality_events_total"),
            counts(&metrics, "tts_orchestrator_frame_quality_events_total"),
        );
        let findings = tts_client::doctor::frames::run(&pipeline.ws_url, TEXT)
            .await
            .expect("doctor frames");
        let detail = &findings.detail;
        let from_doctor: BTreeMap<&'static str, f64> = KINDS
            .iter()
            .map(|k| (*k, detail["quality_events"][*k].as_f64().unwrap_or(-1.0)))
            .collect();
        assert_eq!(
            raised(&from_doctor),
            expected,
            "{name}: doctor frames {from_doctor:?}"
        );
        assert_eq!(detail["integrity_failures"], 0, "{name}");
        let doctor_failed = detail["status"] == "fail";
        assert_eq!(
            doctor_failed,
            !expected.is_empty(),
            "{name}: {}",
            detail["status"]
        );
        // The worker counts as it sends and the orchestrator as it relays:
        // both have seen the whole stream once the client has.
        let settled = eventually(std::time::Duration::from_secs(5), || {
            let o = delta(
                &o0,
                &counts(&metrics, "tts_orchestrator_frame_quality_events_total"),
            );
            let same = o == from_doctor;
            async move { same }
        })
        .await;
        let (w, o) = (
            delta(
                &w0,
                &counts(&metrics, "tts_worker_frame_quality_events_total"),
            ),
            delta(
                &o0,
                &counts(&metrics, "tts_orchestrator_frame_quality_events_total"),
            ),
        );
        eprintln!("{name}: worker {w:?}, orchestrator {o:?}, doctor {from_doctor:?}");
        assert!(
            settled,
            "{name}: orchestrator {o:?}, doctor {from_doctor:?}"
        );
        assert_eq!(raised(&w), expected, "{name}: worker {w:?}");
        assert_eq!(w, o, "{name}: both hops see the same events");
        pipeline.orchestrator.stop().await;
        worker.stop().await;
    }
}
