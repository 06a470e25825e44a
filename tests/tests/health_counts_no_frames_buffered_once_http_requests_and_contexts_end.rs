//! `/health`'s frame counts are right for every way audio leaves: after an
//! HTTP speech request and after a context (streamed text input), no frame
//! is left counted as buffered, and the frames the HTTP body carried count
//! as sent.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tts_client::{Client, Collector};
use tts_tests::{eventually, http_get, http_post, spawn_pipeline};

async fn health(admin: std::net::SocketAddr) -> Value {
    let (status, body) = http_get(admin, "/health").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("health JSON")
}

async fn settles_at_zero(admin: std::net::SocketAddr) -> bool {
    eventually(Duration::from_secs(10), || async {
        health(admin).await["frames_buffered"] == json!(0)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_counts_no_frames_buffered_once_http_requests_and_contexts_end() {
    let (worker, pipeline) = spawn_pipeline().await;
    let admin = pipeline.admin;

    // An HTTP speech request: its frames are sent, none stay buffered.
    let before = health(admin).await["frames_sent"].as_u64().expect("count");
    let body = r#"{"input":"Counted on the way out.","response_format":"pcm"}"#;
    let answer = http_post(pipeline.orchestrator.addr, "/v1/audio/speech", body, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.headers);
    assert!(!answer.body.is_empty());
    assert!(
        settles_at_zero(admin).await,
        "frames still counted as buffered after an HTTP request: {}",
        health(admin).await
    );
    let after = health(admin).await["frames_sent"].as_u64().expect("count");
    assert!(
        after > before,
        "HTTP frames count as sent: {before} → {after}"
    );

    // A context: its clauses' frames and its own are all accounted for.
    let mut client = Client::connect(&pipeline.ws_url).await.expect("connect");
    let id = "ctx-count";
    for message in [
        json!({"type": "context_open", "request_id": id}),
        json!({"type": "append", "request_id": id, "text": "One clause. And another one."}),
        json!({"type": "close", "request_id": id}),
    ] {
        client.send_json(&message).await.expect("send");
    }
    let mut collector = Collector::new(id.to_owned(), Instant::now());
    let utterance = loop {
        let event = client.next_event().await.expect("event");
        if let Some(done) = collector.on_event(event).expect("no error") {
            break done;
        }
    };
    assert_eq!(utterance.report.integrity_failures(), 0);
    assert!(utterance.report.frames > 0);
    assert!(
        settles_at_zero(admin).await,
        "frames still counted as buffered after a context: {}",
        health(admin).await
    );
    assert_eq!(
        pipeline
            .stats
            .frames_buffered
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    drop(client);
    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
