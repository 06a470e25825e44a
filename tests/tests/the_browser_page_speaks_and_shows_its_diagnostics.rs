//! The orchestrator's page (`GET /`) in a real headless Chromium (Debian's
//! `chromium`, driven by Playwright for Python; both installed by
//! `scripts/setup.sh --test`), used as a listener would: it lists the
//! voices, speaks a sentence through its AudioWorklet with the word
//! playing highlighted and its counters showing every frame received,
//! verified and played, the buffer drained to 0 at the end; Stop silences
//! a long sentence at once; the same connection then speaks again. No
//! console errors. The screenshot is kept in
//! `target/test-artifacts/browser-page.png`.

use serde_json::Value;
use tts_tests::{http_get, python_json, repo_root, spawn_pipeline};

const SHORT_WORDS: [&str; 11] = [
    "Hello", "from", "the", "browser", "Every", "frame", "is", "checked", "as", "it", "arrives",
];

/// Checks one utterance that ran to its end.
fn spoke_to_the_end(stats: &Value, report: &Value) {
    assert_eq!(stats["error"], Value::Null, "{report}");
    assert_eq!(stats["state"], "done", "{report}");
    assert_eq!(stats["checksumFailures"], 0, "{report}");
    assert_eq!(stats["sequenceFailures"], 0, "{report}");
    assert_eq!(stats["malformed"], 0, "{report}");
    assert_eq!(stats["bufferedMs"], 0.0, "done means played out: {report}");
}

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
    assert_eq!(report["errors"], serde_json::json!([]), "console errors");

    // 1. To the end: every frame verified and played, the buffer at 0.
    let first = &report["first"];
    spoke_to_the_end(first, &report);
    let frames = first["frames"].as_u64().expect("frames");
    assert!(frames > 100, "{frames} frames: {report}");
    let ttfa = first["ttfaMs"].as_f64().expect("time to first audio");
    assert!(ttfa > 0.0, "{report}");
    let played = first["playedMs"].as_f64().expect("played");
    let received = frames as f64 * 20.0;
    assert!(
        played > received * 0.9,
        "played {played:.0} of {received:.0} ms: {report}"
    );
    // What the page shows is what it counted, graded against thresholds.
    let shown = &report["first_shown"];
    assert_eq!(shown["frames"], frames.to_string());
    assert_eq!(shown["crc"], "0");
    assert_eq!(shown["buffered"], "0.0 ms");
    let classes = &report["first_classes"];
    assert_eq!(classes["crc"], "v good", "{report}");
    assert_eq!(
        classes["underruns"].as_str().map(|c| c.starts_with("v ")),
        Some(true)
    );
    assert!(
        ["v good", "v fair", "v bad"].contains(&classes["ttfa"].as_str().unwrap_or("")),
        "{report}"
    );
    // The highlight followed the words, in the order they were spoken.
    let seen: Vec<&str> = first["wordsSeen"]
        .as_array()
        .expect("words seen")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(seen.len() >= 6, "highlighted {seen:?}");
    let mut rest = SHORT_WORDS.iter();
    for word in &seen {
        assert!(
            rest.any(|w| w == word),
            "{word:?} highlighted out of order: {seen:?}"
        );
    }

    // 2. Stop: nothing more plays, the request ends cancelled.
    let stopped = &report["stopped"];
    assert_eq!(stopped["state"], "stopped", "{report}");
    assert_eq!(stopped["stops"], 1);
    let at_stop = report["played_at_stop"].as_f64().expect("played at stop");
    let later = stopped["playedMs"].as_f64().expect("played later");
    assert!(
        later - at_stop < 5.0,
        "{:.1} ms played after Stop: {report}",
        later - at_stop
    );
    assert_eq!(stopped["bufferedMs"], 0.0, "{report}");

    // 3. The same connection speaks again.
    let last = &report["last"];
    spoke_to_the_end(last, &report);
    assert_eq!(last["requests"], 3);
    assert!(last["frames"].as_u64().expect("frames") > frames + 100);

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
