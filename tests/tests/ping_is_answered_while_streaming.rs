//! A ping sent while a long text is streaming is answered at once, ahead of
//! the queued audio.

use serde_json::json;
use tts_client::{Client, Event, ServerMessage, SynthesizeOptions};
use tts_tests::{LONG_TEXT, spawn_pipeline};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_is_answered_while_streaming() {
    let (worker, pipeline) = spawn_pipeline().await;
    let mut client = Client::connect(&pipeline.ws_url).await.expect("connect");
    client
        .start(LONG_TEXT, &SynthesizeOptions::default())
        .await
        .expect("send");
    // Wait until audio flows.
    loop {
        if let Event::Frame(..) = client.next_event().await.expect("event") {
            break;
        }
    }
    client
        .send_json(&json!({"type": "ping", "id": 42}))
        .await
        .expect("ping");
    let mut frames_before_pong = 0;
    let (id, server_time_us) = loop {
        match client.next_event().await.expect("event") {
            Event::Frame(..) => frames_before_pong += 1,
            Event::Message(ServerMessage::Pong {
                id, server_time_us, ..
            }) => break (id, server_time_us),
            Event::Message(m @ ServerMessage::End { .. }) => {
                panic!("stream ended before the pong: {m:?}")
            }
            _ => {}
        }
    };
    assert_eq!(id, 42);
    assert!(server_time_us > 1_600_000_000_000_000);
    // Frames already in flight on the socket may precede the pong, but not
    // the rest of the request (thousands of frames).
    assert!(
        frames_before_pong < 200,
        "{frames_before_pong} frames before the pong"
    );

    drop(client);
    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
