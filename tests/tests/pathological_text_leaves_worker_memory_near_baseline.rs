//! Text that expands enormously into phonemes (a long run of digits) is
//! synthesised in bounded text-part runs, so the worker's memory does not
//! ratchet up: after such requests its resident memory is back near what a
//! normal long request leaves.

use std::time::Duration;

use tts_client::{Client, SynthesizeOptions};
use tts_orchestrator::OrchestratorConfig;
use tts_tests::{MEDIUM_TEXT, ServiceProcess, eventually, spawn_orchestrator, worker_load};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pathological_text_leaves_worker_memory_near_baseline() {
    let worker = ServiceProcess::worker(&["--synthesis-threads", "2"]).await;
    let pipeline = spawn_orchestrator(
        format!("http://{}", worker.addr),
        OrchestratorConfig::default(),
    )
    .await;
    let mut client = Client::connect(&pipeline.ws_url).await.expect("connect");
    client.timeout = Duration::from_secs(60);
    let fast = SynthesizeOptions {
        fast: true,
        ..SynthesizeOptions::default()
    };
    // The baseline: after normal long sentences on both threads.
    for _ in 0..2 {
        client
            .synthesize(MEDIUM_TEXT, &fast)
            .await
            .expect("medium text");
    }
    // Measured once the worker is idle again.
    idle(&worker).await;
    let baseline = worker.rss_bytes();
    let digits = "7".repeat(1500);
    for _ in 0..2 {
        let u = client.synthesize(&digits, &fast).await.expect("digits");
        assert!(u.report.frames > 1_000, "{} frames", u.report.frames);
        assert_eq!(u.report.integrity_failures(), 0);
    }
    idle(&worker).await;
    let after = worker.rss_bytes();
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    eprintln!(
        "worker RSS {:.0} MiB after normal text, {:.0} MiB after 1,500 digits twice",
        mib(baseline),
        mib(after)
    );
    assert!(
        after < baseline + 100 * (1 << 20),
        "worker memory grew from {:.0} to {:.0} MiB",
        mib(baseline),
        mib(after)
    );
    drop(client);
    pipeline.orchestrator.stop().await;
}

/// Waits until the worker holds no stream.
async fn idle(worker: &ServiceProcess) {
    let addr = worker.addr;
    let idle = eventually(Duration::from_secs(10), || async move {
        worker_load(addr).await.streams == 0
    })
    .await;
    assert!(idle, "the worker still holds streams");
}
