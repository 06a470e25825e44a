//! When the orchestrator is told to stop, it reports not ready, refuses new
//! connections and requests, lets the ones in flight finish, then closes
//! connections with code 1001.

use tts_client::{
    Client, ClientError, Collector, ErrorCode, Event, ServerMessage, SynthesizeOptions,
};
use tts_tests::spawn_pipeline;

/// About 3.5 s of speech: streamed in real time, it ends well inside the
/// test orchestrator's 5 s grace period.
const TEXT: &str = "The history of the telephone is a story of many inventors.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrator_shutdown_lets_requests_finish() {
    let (worker, pipeline) = spawn_pipeline().await;
    let mut client = Client::connect(&pipeline.ws_url).await.expect("connect");
    let sent = std::time::Instant::now();
    let request_id = client
        .start(TEXT, &SynthesizeOptions::default())
        .await
        .expect("send");
    let mut collector = Collector::new(request_id, sent);
    loop {
        let event = client.next_event().await.expect("event");
        let is_frame = matches!(event, Event::Frame(..));
        assert!(collector.on_event(event).expect("ok").is_none());
        if is_frame {
            break;
        }
    }
    pipeline.orchestrator.signal_stop();
    // While draining, the admin listener stays up and says not ready.
    let admin = pipeline.admin;
    let draining = tts_tests::eventually(std::time::Duration::from_secs(5), || async move {
        tts_tests::http_get(admin, "/ready").await.0 == 503
    })
    .await;
    assert!(draining, "/ready does not report the drain");
    // New connections are no longer accepted.
    let url = pipeline.ws_url.clone();
    let refused = tts_tests::eventually(std::time::Duration::from_secs(5), || {
        let url = url.clone();
        async move { Client::connect(&url).await.is_err() }
    })
    .await;
    assert!(refused, "the WebSocket listener still accepts");

    // A new request on the same connection is refused...
    client
        .send_json(
            &serde_json::json!({"type": "synthesize", "text": "One more?", "request_id": "late"}),
        )
        .await
        .expect("send");
    // ...while the one in flight runs to its end.
    let mut refused = false;
    let done = loop {
        let event = client.next_event().await.expect("event");
        if let Event::Message(m) = &event
            && m.request_id() == Some("late")
        {
            assert!(
                matches!(
                    m,
                    ServerMessage::Error {
                        code: ErrorCode::ShuttingDown,
                        ..
                    }
                ),
                "{m:?}"
            );
            refused = true;
            continue;
        }
        if let Some(done) = collector.on_event(event).expect("no error") {
            break done;
        }
    };
    assert!(refused, "the late request was answered");
    assert!(!done.report.cancelled && done.report.last_flag_seen);
    assert_eq!(done.report.frames, done.report.end_frames);
    assert!(done.report.frames > 120, "{} frames", done.report.frames);

    // Then the server closes the connection.
    match client.next_event().await {
        Err(ClientError::Closed) => {}
        other => panic!("expected the connection to close, got {other:?}"),
    }
    assert!(
        pipeline
            .orchestrator
            .join(std::time::Duration::from_secs(10))
            .await
    );
    worker.stop().await;
}
