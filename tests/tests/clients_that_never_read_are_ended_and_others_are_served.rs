//! Clients that start long requests and never read cannot keep the worker's
//! slots: once a request's frames have found no reader for the stalled-
//! stream timeout it ends with `client_too_slow` (counted as the client's
//! doing), its worker slot is freed, and a fresh client is served.

use std::time::{Duration, Instant};

use futures::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tts_client::{Client, ClientError, ErrorCode, SynthesizeOptions};
use tts_orchestrator::OrchestratorConfig;
use tts_tests::{
    LONG_TEXT, eventually, raw_ws, sample, spawn_metered_pipeline, worker_config, worker_load,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_are_ended_and_others_are_served() {
    // Only the hard cap of eight requests limits admission here.
    let (metrics, worker, pipeline) = spawn_metered_pipeline(
        tts_worker::WorkerConfig {
            max_requests: 8,
            admission: false,
            ..worker_config()
        },
        OrchestratorConfig {
            stalled_stream_secs: 2.0,
            ..OrchestratorConfig::default()
        },
    )
    .await;

    // Two clients, four long requests each, a tiny receive buffer, never
    // reading: all eight of the worker's slots.
    let mut hogs = Vec::new();
    for c in 0..2 {
        let mut ws = raw_ws(&pipeline.ws_url, Some(4096), &[])
            .await
            .expect("connect");
        for r in 0..4 {
            let msg =
                json!({"type": "synthesize", "text": LONG_TEXT, "request_id": format!("{c}-{r}")});
            ws.send(Message::text(msg.to_string())).await.expect("send");
        }
        hogs.push(ws);
    }
    let addr = worker.addr;
    let taken = eventually(Duration::from_secs(10), || async move {
        worker_load(addr).await.streams == 8
    })
    .await;
    assert!(taken, "the eight requests never all reached the worker");

    // A fresh client is refused while they hold the slots, then served.
    let started = Instant::now();
    let mut client = Client::connect(&pipeline.ws_url).await.expect("connect");
    let mut refused = 0;
    let served = loop {
        match client
            .synthesize("Hello there.", &SynthesizeOptions::default())
            .await
        {
            Ok(u) => break u,
            Err(ClientError::Server {
                code: ErrorCode::Overloaded,
                ..
            }) => {
                refused += 1;
                assert!(started.elapsed() < Duration::from_secs(60), "never served");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert!(served.report.frames > 0 && served.report.integrity_failures() == 0);
    assert!(refused > 0, "the slots were never all taken");
    eprintln!("served after {:?} ({refused} refusals)", started.elapsed());

    let scrape = metrics.render();
    let stalled = sample(
        &scrape,
        r#"tts_orchestrator_requests_total{outcome="client_error",code="client_too_slow"}"#,
    );
    assert!(stalled >= 1.0, "no request ended with client_too_slow");
    assert_eq!(
        sample(
            &scrape,
            r#"tts_orchestrator_requests_total{outcome="failed",code="internal"}"#
        ),
        0.0
    );
    drop(hogs);
    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
