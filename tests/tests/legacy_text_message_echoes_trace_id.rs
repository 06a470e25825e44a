//! Existing clients send `{"text": …, "trace_id": …}` with no `type`: that
//! is a synthesize request, and its trace id comes back in `start`.

use tts_client::{Client, Collector, Event, ServerMessage};
use tts_tests::spawn_pipeline;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_text_message_echoes_trace_id() {
    let (worker, pipeline) = spawn_pipeline().await;
    let mut client = Client::connect(&pipeline.ws_url).await.expect("connect");
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    client
        .send_json(&serde_json::json!({"text": "Hello world", "trace_id": trace}))
        .await
        .expect("send");
    // The server generated the request id: read it from `start`.
    let start = client.next_event().await.expect("start");
    let Event::Message(ServerMessage::Start {
        request_id,
        trace_id,
        ..
    }) = &start
    else {
        panic!("expected start, got {start:?}");
    };
    assert_eq!(trace_id, trace);
    assert!(!request_id.is_empty(), "a generated request id");

    let mut collector = Collector::new(request_id.clone(), std::time::Instant::now());
    collector.on_event(start).expect("start accepted");
    let utterance = loop {
        let event = client.next_event().await.expect("event");
        if let Some(done) = collector.on_event(event).expect("no error") {
            break done;
        }
    };
    assert_eq!(utterance.report.trace_id, trace);
    assert!(utterance.report.frames > 10);
    assert_eq!(utterance.report.integrity_failures(), 0);

    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
