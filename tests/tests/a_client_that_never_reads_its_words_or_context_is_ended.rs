//! Every item of a request waits a bounded time for room in its
//! connection's queue, not only its frames: a client that asks for word
//! timestamps, and one that streams its text as a context, and then never
//! read, are both ended with `client_too_slow` once their queue has had no
//! room for the stalled-stream timeout; another client is served with its
//! words meanwhile.

use std::time::Duration;

use futures::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tts_client::{Client, SynthesizeOptions};
use tts_orchestrator::OrchestratorConfig;
use tts_tests::{LONG_TEXT, eventually, raw_ws, sample, spawn_metered_pipeline, worker_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_words_or_context_is_ended() {
    let (metrics, worker, pipeline) = spawn_metered_pipeline(
        tts_worker::WorkerConfig {
            admission: false,
            ..worker_config()
        },
        OrchestratorConfig {
            stalled_stream_secs: 2.0,
            ..OrchestratorConfig::default()
        },
    )
    .await;

    // One connection, a tiny receive buffer, never read: a request with
    // timestamps and a context with timestamps.
    let mut hog = raw_ws(&pipeline.ws_url, Some(4096), &[])
        .await
        .expect("connect");
    for msg in [
        json!({"type": "synthesize", "text": LONG_TEXT, "request_id": "words", "timestamps": true}),
        json!({"type": "context_open", "request_id": "context", "timestamps": true}),
        json!({"type": "append", "request_id": "context", "text": LONG_TEXT}),
        json!({"type": "close", "request_id": "context"}),
    ] {
        hog.send(Message::text(msg.to_string()))
            .await
            .expect("send");
    }

    // Another client is served meanwhile, words and all.
    let mut client = Client::connect(&pipeline.ws_url).await.expect("connect");
    let timed = SynthesizeOptions {
        timestamps: true,
        ..SynthesizeOptions::default()
    };
    let u = client
        .synthesize("Hello there.", &timed)
        .await
        .expect("served");
    assert_eq!(u.report.integrity_failures(), 0);
    assert_eq!(u.report.words.len(), 2);

    let too_slow =
        r#"tts_orchestrator_requests_total{outcome="client_error",code="client_too_slow"}"#;
    let ended = eventually(Duration::from_secs(60), || {
        let scrape = metrics.render();
        async move { sample(&scrape, too_slow) >= 2.0 }
    })
    .await;
    assert!(
        ended,
        "both requests of the client that never reads end with client_too_slow (counted {})",
        sample(&metrics.render(), too_slow)
    );

    drop(hog);
    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
