//! Eight connections at once all complete with valid audio.

use tts_client::{Client, SynthesizeOptions};
use tts_tests::{assert_speech_like, spawn_pipeline};

const TEXTS: [&str; 8] = [
    "One small step for a man, one giant leap for mankind.",
    "The rain in Spain stays mainly in the plain.",
    "To be or not to be, that is the question.",
    "All that glitters is not gold.",
    "A journey of a thousand miles begins with a single step.",
    "Knowledge is power, and power is responsibility.",
    "The early bird catches the worm, but the second mouse gets the cheese.",
    "Time flies like an arrow, and fruit flies like a banana.",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_connections_complete_concurrently() {
    let (worker, pipeline) = spawn_pipeline().await;
    let mut tasks = Vec::new();
    for (i, text) in TEXTS.iter().enumerate() {
        let url = pipeline.ws_url.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&url).await.expect("connect");
            let opts = SynthesizeOptions {
                request_id: Some(format!("req-{i}")),
                ..SynthesizeOptions::default()
            };
            let u = client.synthesize(text, &opts).await.expect("synthesize");
            (i, text.split_whitespace().count(), u)
        }));
    }
    let mut sessions = std::collections::HashSet::new();
    for task in tasks {
        let (i, words, u) = task.await.expect("task");
        assert_eq!(u.report.request_id, format!("req-{i}"));
        assert_eq!(u.report.integrity_failures(), 0, "request {i}");
        assert_eq!(u.report.frames, u.report.end_frames, "request {i}");
        assert!(u.report.last_flag_seen);
        assert_speech_like(&u.samples, words);
        sessions.insert(u.report.trace_id.clone());
    }
    assert_eq!(sessions.len(), 8, "each request has its own trace id");
    assert_eq!(
        pipeline
            .stats
            .frames_received
            .load(std::sync::atomic::Ordering::Relaxed),
        pipeline
            .stats
            .frames_sent
            .load(std::sync::atomic::Ordering::Relaxed),
        "every frame received from the worker was sent"
    );

    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
