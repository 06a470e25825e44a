//! Every way the server ends a request or a connection is said to the
//! client: an oversized message gets an `error` for each request in flight
//! and close 1009, invalid UTF-8 close 1007, oversized identifiers
//! `bad_request` before any work, and a shutdown past its grace period
//! `shutting_down` for each request and close 1001.

use std::time::Duration;

use futures::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
use tts_orchestrator::OrchestratorConfig;
use tts_tests::{
    LONG_TEXT, next_text_or_close, raw_ws, spawn_orchestrator, spawn_worker, worker_config,
};

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Starts a long request and waits for its `start`.
async fn start_long(ws: &mut Ws, request_id: &str) {
    let msg = json!({"type": "synthesize", "text": LONG_TEXT, "request_id": request_id});
    ws.send(Message::text(msg.to_string())).await.expect("send");
    loop {
        match next_text_or_close(ws).await {
            Some(Ok(v)) if v["type"] == "start" => return,
            Some(Ok(_)) => continue,
            other => panic!("no start: {other:?}"),
        }
    }
}

/// Reads until the close frame: the `error`s seen on the way, and the code.
async fn errors_then_close(ws: &mut Ws) -> (Vec<serde_json::Value>, u16) {
    let mut errors = Vec::new();
    let read = async {
        loop {
            match next_text_or_close(ws).await {
                Some(Ok(v)) if v["type"] == "error" => errors.push(v),
                Some(Ok(_)) => {}
                Some(Err(code)) => return code,
                None => return 0,
            }
        }
    };
    let code = tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the server closes within 20 s");
    (errors, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_ends_in_a_close_code_or_a_coded_error() {
    let worker = spawn_worker(worker_config()).await;
    let worker_url = format!("http://{}", worker.addr);
    let config = OrchestratorConfig {
        max_message_bytes: 4096,
        ..OrchestratorConfig::default()
    };
    let pipeline = spawn_orchestrator(worker_url.clone(), config).await;

    // Too big: an error for the request in flight, then 1009.
    let mut ws = raw_ws(&pipeline.ws_url, None, &[]).await.expect("connect");
    start_long(&mut ws, "big").await;
    let huge = json!({"type": "synthesize", "text": "x".repeat(5000)}).to_string();
    ws.send(Message::text(huge)).await.expect("send");
    let (errors, code) = errors_then_close(&mut ws).await;
    assert_eq!(code, 1009);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["request_id"], "big");
    assert_eq!(errors[0]["code"], "bad_request");

    // Invalid UTF-8 in a text frame: an error for the request, then 1007.
    let mut ws = raw_ws(&pipeline.ws_url, None, &[]).await.expect("connect");
    start_long(&mut ws, "utf8").await;
    let header = FrameHeader {
        opcode: OpCode::Data(Data::Text),
        is_final: true,
        ..FrameHeader::default()
    };
    let bad = Frame::from_payload(header, vec![0x7b, 0xff, 0xfe, 0x7d].into());
    ws.send(Message::Frame(bad)).await.expect("send");
    let (errors, code) = errors_then_close(&mut ws).await;
    assert_eq!(code, 1007);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["request_id"], "utf8");

    // Oversized identifiers and voice names: bad_request, connection open.
    let mut ws = raw_ws(&pipeline.ws_url, None, &[]).await.expect("connect");
    for (field, len) in [("request_id", 2000), ("trace_id", 500), ("voice", 1000)] {
        let mut msg = json!({"type": "synthesize", "text": "Hello."});
        msg[field] = json!("v".repeat(len));
        ws.send(Message::text(msg.to_string())).await.expect("send");
        loop {
            match next_text_or_close(&mut ws).await {
                Some(Ok(v)) if v["type"] == "error" => {
                    assert_eq!(v["code"], "bad_request", "{field}: {v}");
                    assert!(
                        v["message"].as_str().is_some_and(|m| m.contains(field)),
                        "{v}"
                    );
                    break;
                }
                Some(Ok(_)) => {}
                other => panic!("{field}: {other:?}"),
            }
        }
    }
    drop(ws);
    pipeline.orchestrator.stop().await;

    // Shutdown past the grace period: shutting_down, then 1001.
    let pipeline = tts_tests::spawn_orchestrator_with_grace(
        worker_url,
        OrchestratorConfig::default(),
        Duration::from_secs(1),
    )
    .await;
    let mut ws = raw_ws(&pipeline.ws_url, None, &[]).await.expect("connect");
    start_long(&mut ws, "long").await;
    pipeline.orchestrator.signal_stop();
    let (errors, code) = errors_then_close(&mut ws).await;
    assert_eq!(code, 1001);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["code"], "shutting_down");
    assert_eq!(errors[0]["request_id"], "long");
    assert!(pipeline.orchestrator.join(Duration::from_secs(15)).await);
    worker.stop().await;
}
