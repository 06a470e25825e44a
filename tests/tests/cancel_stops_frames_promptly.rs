//! `cancel` stops a request's frames promptly: `end` says `cancelled`, it
//! counts exactly the frames that were sent, no frame of the request follows
//! it, and far fewer frames were sent than the whole text would take.

use serde_json::json;
use tts_client::{Client, Event, ServerMessage, SynthesizeOptions};
use tts_frame::decode_frame;
use tts_tests::{LONG_TEXT, spawn_pipeline};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_frames_promptly() {
    let (worker, pipeline) = spawn_pipeline().await;
    let mut client = Client::connect(&pipeline.ws_url).await.expect("connect");
    let opts = SynthesizeOptions {
        request_id: Some("long-1".into()),
        ..SynthesizeOptions::default()
    };
    client.start(LONG_TEXT, &opts).await.expect("send");
    let mut received = 0u64;
    loop {
        if let Event::Frame(..) = client.next_event().await.expect("event") {
            received += 1;
            break;
        }
    }
    client
        .send_json(&json!({"type": "cancel", "request_id": "long-1"}))
        .await
        .expect("cancel");
    let (request_id, frames, cancelled) = loop {
        match client.next_event().await.expect("event") {
            Event::Frame(..) => received += 1,
            Event::Message(ServerMessage::End {
                request_id,
                frames,
                cancelled,
                ..
            }) => break (request_id, frames, cancelled),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(request_id, "long-1");
    assert!(cancelled);
    assert_eq!(frames, received, "end counts the frames actually sent");
    // The paragraph is about 50 s of speech (2,500 frames).
    assert!(
        received < 1_000,
        "{received} frames arrived: cancel was not prompt"
    );

    // Nothing of the cancelled stream follows `end`; the connection still works.
    let rtt = client.ping(1).await.expect("pong after cancel");
    assert!(rtt.as_secs() < 10);
    let stray =
        tokio::time::timeout(std::time::Duration::from_millis(300), client.next_event()).await;
    if let Ok(Ok(Event::Frame(bytes, _))) = stray {
        let (h, _) = decode_frame(&bytes).expect("frame");
        panic!("frame {} arrived after end", h.sequence);
    }
    let again = client
        .synthesize("Still here.", &SynthesizeOptions::default())
        .await
        .expect("a new request completes");
    assert!(!again.report.cancelled && again.report.frames > 0);

    drop(client);
    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
