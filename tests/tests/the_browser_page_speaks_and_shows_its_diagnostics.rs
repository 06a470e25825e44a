//! The orchestrator's page (`GET /`) in a real headless Chromium (Debian's
//! `chromium`, driven by Playwright for Python; both installed by
//! `scripts/setup.sh --test`): it lists the voices, speaks a sentence
//! through its AudioWorklet, and its own counters show every frame
//! received, verified and played. The screenshot is kept in
//! `target/test-artifacts/browser-page.png`.

use tts_tests::{http_get, python_json, repo_root, spawn_pipeline};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_page_speaks_and_shows_its_diagnostics() {
    let (worker, pipeline) = spawn_pipeline().await;
    let addr = pipeline.orchestrator.addr;
    let (status, html) = http_get(addr, "/").await;
    assert_eq!(status, 200);
    assert!(html.contains("AudioWorklet") || html.contains("audioWorklet"));

    let artifacts = repo_root().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts directory");
    let screenshot = artifacts.join("browser-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let report = python_json(
        "browser_page.py",
        vec![format!("http://{addr}/"), screenshot.display().to_string()],
    )
    .await;

    let stats = &report["stats"];
    assert_eq!(stats["error"], serde_json::Value::Null, "{report}");
    assert_eq!(stats["state"], "done", "{report}");
    let frames = stats["frames"].as_u64().expect("frames");
    assert!(frames > 100, "{frames} frames: {report}");
    assert_eq!(stats["checksumFailures"], 0, "{report}");
    assert_eq!(stats["sequenceFailures"], 0, "{report}");
    assert_eq!(stats["malformed"], 0, "{report}");
    let ttfa = stats["ttfaMs"].as_f64().expect("time to first audio");
    assert!(ttfa > 0.0, "{report}");
    // The worklet played (about) what arrived: frames × 20 ms.
    let played = stats["playedMs"].as_f64().expect("played");
    let received = frames as f64 * 20.0;
    assert!(
        played > received * 0.9,
        "played {played:.0} of {received:.0} ms: {report}"
    );
    // What the page shows is what it counted.
    assert_eq!(report["shown"]["frames"], frames.to_string());
    assert_eq!(report["shown"]["crc"], "0");
    assert!(
        report["voices"]
            .as_array()
            .is_some_and(|v| v.iter().any(|n| n == "en_US-joe-medium")),
        "{report}"
    );
    let png = std::fs::read(&screenshot).expect("screenshot written");
    assert_eq!(&png[1..4], b"PNG");

    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
