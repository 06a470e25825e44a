//! Every kind of bad input is answered with its error code, and the same
//! connection then completes a valid request.

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tts_client::{Client, Event, SynthesizeOptions};
use tts_orchestrator::OrchestratorConfig;
use tts_tests::{spawn_orchestrator, spawn_worker, worker_config};

async fn next_json(client: &mut Client) -> Value {
    loop {
        // The typed message, as the JSON it was sent as.
        if let Event::Message(m) = client.next_event().await.expect("event") {
            return serde_json::to_value(&m).expect("serialisable");
        }
    }
}

async fn expect_error(client: &mut Client, message: Message, code: &str) -> Value {
    client.send_raw(message).await.expect("send");
    let v = next_json(client).await;
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    v
}

async fn still_works(client: &mut Client) {
    let u = client
        .synthesize("Okay.", &SynthesizeOptions::default())
        .await
        .expect("valid request after an error");
    assert!(u.report.frames > 0 && u.report.integrity_failures() == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_coded_errors_and_connection_survives() {
    let worker = spawn_worker(worker_config()).await;
    let config = OrchestratorConfig {
        max_text_chars: 200,
        max_requests_per_connection: 1,
        ..OrchestratorConfig::default()
    };
    let pipeline = spawn_orchestrator(format!("http://{}", worker.addr), config).await;
    let mut client = Client::connect(&pipeline.ws_url).await.expect("connect");
    let text = |v: Value| Message::text(v.to_string());

    expect_error(
        &mut client,
        Message::text("this is not json"),
        "bad_request",
    )
    .await;
    expect_error(&mut client, text(json!({"type": "sing"})), "bad_request").await;
    expect_error(
        &mut client,
        text(json!({"type": "synthesize"})),
        "bad_request",
    )
    .await;
    expect_error(
        &mut client,
        text(json!({"type": "synthesize", "text": 12})),
        "bad_request",
    )
    .await;
    expect_error(&mut client, text(json!({"type": "cancel"})), "bad_request").await;
    expect_error(&mut client, Message::binary(vec![1u8, 2, 3]), "bad_request").await;
    still_works(&mut client).await;

    let v = expect_error(
        &mut client,
        text(json!({"type": "synthesize", "text": "   ", "request_id": "e1"})),
        "empty_text",
    )
    .await;
    assert_eq!(v["request_id"], "e1");
    // Text with nothing speakable is empty too (the worker's answer).
    expect_error(
        &mut client,
        text(json!({"type": "synthesize", "text": "... !?"})),
        "empty_text",
    )
    .await;
    let long = "word ".repeat(60);
    expect_error(
        &mut client,
        text(json!({"type": "synthesize", "text": long})),
        "text_too_long",
    )
    .await;
    expect_error(
        &mut client,
        text(json!({"type": "synthesize", "text": "Hi.", "voice": "no-such-voice"})),
        "unknown_voice",
    )
    .await;
    still_works(&mut client).await;

    // A second request while one is in flight exceeds the per-connection limit.
    let busy =
        "This sentence keeps the connection busy for a little while, long enough to try another.";
    client
        .start(busy, &SynthesizeOptions::default())
        .await
        .expect("send");
    expect_error(
        &mut client,
        text(json!({"type": "synthesize", "text": "Me too."})),
        "rate_limited",
    )
    .await;
    loop {
        if next_json(&mut client).await["type"] == "end" {
            break;
        }
    }
    still_works(&mut client).await;

    // The worker goes away: requests get worker_unavailable, not a hang.
    worker.stop().await;
    expect_error(
        &mut client,
        text(json!({"type": "synthesize", "text": "Anyone there?"})),
        "worker_unavailable",
    )
    .await;
    let rtt = client.ping(7).await.expect("the connection is still open");
    assert!(rtt.as_secs() < 10);

    drop(client);
    pipeline.orchestrator.stop().await;
}
