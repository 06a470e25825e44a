//! The listener-paced closed loop and the open-loop rate search, against a
//! small WebSocket server that streams 200 ms of audio per request in real
//! time and refuses (`overloaded`, with a retry hint) any request beyond a
//! fixed number in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tts_frame::{FRAME_SAMPLES, FrameHeader, PAYLOAD_BYTES, checksum, encode_frame};
use tts_loadtest::run::{Limit, Mode, Pace, RunConfig, run};

/// Frames per request: 200 ms of audio, sent 20 ms apart.
const FRAMES: u32 = 10;

async fn scripted_server(listener: TcpListener, slots: usize) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    while let Ok((tcp, _)) = listener.accept().await {
        let in_flight = Arc::clone(&in_flight);
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
                if in_flight.fetch_add(1, Ordering::SeqCst) >= slots {
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    let refusal = json!({"type":"error","code":"overloaded","request_id":id,
                        "message":"at capacity","retry_after_ms":50});
                    let _ = ws.send(Message::text(refusal.to_string())).await;
                    continue;
                }
                let start = json!({"type":"start","request_id":id,"trace_id":"t","stream_id":1,"voice":"v"});
                let _ = ws.send(Message::text(start.to_string())).await;
                let payload = vec![0x11u8; PAYLOAD_BYTES];
                let mut wire = Vec::new();
                for sequence in 0..FRAMES {
                    let header = FrameHeader {
                        stream_id: 1,
                        sequence,
                        crc32c: checksum(&payload),
                        last: sequence + 1 == FRAMES,
                        worker_ts_us: tts_frame::now_us(),
                        orchestrator_ts_us: tts_frame::now_us(),
                    };
                    encode_frame(&header, &payload, &mut wire);
                    let _ = ws.send(Message::binary(wire.clone())).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let samples = FRAMES as usize * FRAME_SAMPLES;
                let end = json!({"type":"end","request_id":id,"stream_id":1,"frames":FRAMES,
                    "samples":samples,"cancelled":false});
                let _ = ws.send(Message::text(end.to_string())).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        });
    }
}

async fn serve(slots: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(scripted_server(listener, slots));
    format!("ws://{addr}/ws")
}

#[tokio::test]
async fn a_playout_paced_session_waits_for_the_audio_to_play_and_think() {
    let url = serve(4).await;
    let think = Duration::from_millis(150);
    let config = RunConfig {
        url,
        mode: Mode::Closed { concurrency: 1 },
        limit: Limit::Requests(4),
        pace: Pace::Playout,
        think_time: think,
        ..RunConfig::default()
    };
    let (agg, wall) = run(&config, |_| {}).await;
    let report = agg.report(json!({}), wall);
    assert_eq!(report.requests.completed, 4);
    let mut starts: Vec<[f64; 2]> = report.timeline.clone();
    starts.sort_by(|a, b| a[0].total_cmp(&b[0]));
    // Each request starts once the previous one's 200 ms of audio has
    // played from its first frame, and the think time has passed.
    for pair in starts.windows(2) {
        let [(start, ttfa_ms), (next, _)] = [(pair[0][0], pair[0][1]), (pair[1][0], 0.0)];
        let played = start + ttfa_ms / 1e3 + 0.2;
        assert!(
            next >= played + think.as_secs_f64() - 0.005,
            "next request at {next:.3} s, audio played until {played:.3} s"
        );
    }
    // Back to back, the same four requests take about 0.8 s, not 1.4 s.
    assert!(wall.as_secs_f64() > 0.8 + 3.0 * think.as_secs_f64());
}

#[tokio::test]
async fn a_closed_session_retries_a_refusal_after_the_hint() {
    // No slot at all: every request is refused, and a paced session waits
    // the 50 ms hint between them instead of hammering the server.
    let url = serve(0).await;
    let config = RunConfig {
        url,
        mode: Mode::Closed { concurrency: 1 },
        limit: Limit::Requests(5),
        pace: Pace::Playout,
        ..RunConfig::default()
    };
    let (agg, wall) = run(&config, |_| {}).await;
    let report = agg.report(json!({}), wall);
    assert_eq!((report.requests.refused, report.requests.failed), (5, 0));
    assert_eq!(report.latency_ms.refusal.count, 5);
    assert!(wall >= Duration::from_millis(4 * 50), "{wall:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_search_finds_the_rate_the_slots_allow() {
    // Three slots of 200 ms: fixed arrivals up to about 14 req/s fit (three
    // requests overlap), 16 req/s needs a fourth slot.
    let url = serve(3).await;
    let dir = std::env::temp_dir().join(format!("tts-rate-search-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let out = dir.join("report.json");
    let args = out.clone();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tts-loadtest"))
            .args([
                "--url",
                &url,
                "--find-capacity",
                "--rate-search",
                "--fixed-interval",
            ])
            .args([
                "--start-rate",
                "2",
                "--max-rate",
                "32",
                "--rate-resolution",
                "2",
            ])
            .args(["-d", "2s", "--saturation", "2.0", "--ttfa-p99", "1000"])
            .args([
                "--underruns",
                "1000",
                "--ping-interval",
                "0s",
                "--quiet",
                "--json",
            ])
            .arg(&args)
            .stdout(std::process::Stdio::null())
            .status()
    })
    .await
    .expect("join")
    .expect("tts-loadtest runs");
    assert!(status.success());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).expect("report")).expect("JSON");
    let capacity = &report["capacity"];
    let rate = capacity["rate"]["requests_per_second"]
        .as_f64()
        .expect("a rate");
    assert!((8.0..16.0).contains(&rate), "{capacity}");
    let streams = capacity["rate"]["concurrent_streams"]
        .as_f64()
        .expect("streams");
    assert!((streams - rate * 0.2).abs() < 0.05, "{capacity}");
    let share = capacity["rate"]["share_of_saturation"]
        .as_f64()
        .expect("share");
    assert!((share - streams / 2.0).abs() < 1e-9, "{capacity}");
    let steps = capacity["steps"].as_array().expect("steps");
    let failing = steps
        .iter()
        .find(|s| s["pass"] == false)
        .expect("a step that failed");
    assert!(failing["refused"].as_u64() > Some(0), "{failing}");
    assert_eq!(failing["failed"], 0, "refusals are not failures: {failing}");
    let _ = std::fs::remove_dir_all(&dir);
}
