//! The loadtester's accounting on a scripted stream: against a small
//! WebSocket server that speaks the protocol but sends one frame with a bad
//! checksum and leaves one frame out, the report counts exactly those.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tts_frame::{FrameHeader, PAYLOAD_BYTES, checksum, encode_frame};
use tts_loadtest::run::{Limit, Mode, RunConfig, run};

async fn scripted_server(listener: TcpListener) {
    while let Ok((tcp, _)) = listener.accept().await {
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            let ready = json!({"type":"ready","session_id":"s","protocol":1,"sample_rate":48000,
                "channels":1,"frame_samples":960,"encoding":"pcm_s16le"});
            let _ = ws.send(Message::text(ready.to_string())).await;
            while let Some(Ok(msg)) = ws.next().await {
                let Message::Text(text) = msg else { continue };
                let v: serde_json::Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                if v["type"] != "synthesize" {
                    continue;
                }
                let id = v["request_id"].clone();
                let start = json!({"type":"start","request_id":id,"trace_id":"t","stream_id":1,"voice":"v"});
                let _ = ws.send(Message::text(start.to_string())).await;
                let payload: Vec<u8> = (0..PAYLOAD_BYTES).map(|i| (i % 251) as u8).collect();
                let mut wire = Vec::new();
                for sequence in [0u32, 1, 2, 4] {
                    let mut crc = checksum(&payload);
                    if sequence == 2 {
                        crc ^= 1; // damaged on the way
                    }
                    let header = FrameHeader {
                        stream_id: 1,
                        sequence,
                        crc32c: crc,
                        last: sequence == 4,
                        worker_ts_us: tts_frame::now_us(),
                        orchestrator_ts_us: tts_frame::now_us(),
                    };
                    encode_frame(&header, &payload, &mut wire);
                    let _ = ws.send(Message::binary(wire.clone())).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let end = json!({"type":"end","request_id":id,"stream_id":1,"frames":5,"samples":4800,"cancelled":false});
                let _ = ws.send(Message::text(end.to_string())).await;
            }
        });
    }
}

#[tokio::test]
async fn integrity_counts_what_the_stream_lacked() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(scripted_server(listener));
    let config = RunConfig {
        url: format!("ws://{addr}/ws"),
        mode: Mode::Closed { concurrency: 1 },
        limit: Limit::Requests(2),
        ramp_up: Duration::ZERO,
        requests_per_connection: 0,
        texts: vec!["Hello.".into()],
        voice: None,
        buffers: vec![Duration::from_millis(60)],
        ping_interval: Duration::ZERO,
        request_timeout: Duration::from_secs(5),
        max_outstanding: 16,
        ..RunConfig::default()
    };
    let (agg, wall) = run(&config, |_| {}).await;
    let report = agg.report(json!({}), wall);
    assert_eq!(report.requests.completed, 2);
    let i = report.integrity;
    assert_eq!(i.frames_expected, 10);
    assert_eq!(i.frames_received, 8);
    assert_eq!(i.lost, 2, "frame 3 of each request never came");
    assert_eq!(
        i.checksum_failures, 2,
        "frame 2 of each request was damaged"
    );
    assert_eq!((i.duplicated, i.out_of_order, i.malformed), (0, 0, 0));
    assert_eq!(report.latency_ms.ttfa.count, 2);
}
