//! Beyond the limits the connection is closed: after 32 bad messages in a
//! row (close code 1008), or on a message larger than the limit (1009).
//! Other connections are unaffected.

use tokio_tungstenite::tungstenite::Message;
use tts_client::{Client, ClientError, ErrorCode, Event, ServerMessage, SynthesizeOptions};
use tts_tests::spawn_pipeline;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_keeps_misbehaving_is_disconnected() {
    let (worker, pipeline) = spawn_pipeline().await;
    let mut bystander = Client::connect(&pipeline.ws_url).await.expect("connect");

    let mut rude = Client::connect(&pipeline.ws_url).await.expect("connect");
    let mut errors = 0;
    for _ in 0..32 {
        rude.send_raw(Message::text("garbage")).await.expect("send");
    }
    let closed = loop {
        match rude.next_event().await {
            Ok(Event::Message(ServerMessage::Error {
                code: ErrorCode::BadRequest,
                ..
            })) => errors += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!(
        errors, 32,
        "every bad message was answered before the close"
    );
    assert!(matches!(closed, ClientError::Closed), "{closed}");

    let mut huge = Client::connect(&pipeline.ws_url).await.expect("connect");
    let text = "a".repeat(100_000);
    let _ = huge
        .send_json(&serde_json::json!({"type": "synthesize", "text": text}))
        .await;
    let ended = match huge.next_event().await {
        Ok(other) => panic!("expected the connection to close, got {other:?}"),
        Err(e) => e,
    };
    assert!(
        matches!(ended, ClientError::Closed | ClientError::WebSocket(_)),
        "{ended}"
    );

    let u = bystander
        .synthesize("I was not affected.", &SynthesizeOptions::default())
        .await
        .expect("the other connection still works");
    assert!(u.report.frames > 0);

    drop((bystander, rude, huge));
    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
