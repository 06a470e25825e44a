//! A sentence comes back as contiguous frames with valid checksums, `end`
//! counts exactly what was received, and the audio sounds like speech.

use tts_client::{Client, Event};
use tts_frame::{checksum, decode_frame};
use tts_tests::{assert_speech_like, spawn_pipeline};

const TEXT: &str = "The quick brown fox jumps over the lazy dog. This is a streaming speech test.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentence_arrives_as_contiguous_verified_frames() {
    let (worker, pipeline) = spawn_pipeline().await;
    let mut client = Client::connect(&pipeline.ws_url).await.expect("connect");
    assert_eq!(client.ready["type"], "ready");
    assert_eq!(client.ready["protocol"], 1);
    assert_eq!(client.ready["sample_rate"], 48_000);
    assert_eq!(client.ready["channels"], 1);
    assert_eq!(client.ready["frame_samples"], 960);
    assert_eq!(client.ready["encoding"], "pcm_s16le");
    assert!(
        client.ready["session_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );

    client
        .send_json(&serde_json::json!({"type": "synthesize", "text": TEXT, "request_id": "r1"}))
        .await
        .expect("send");

    let start = match client.next_event().await.expect("start") {
        Event::Json(v) => v,
        Event::Frame(..) => panic!("a frame arrived before start"),
    };
    assert_eq!(start["type"], "start");
    assert_eq!(start["request_id"], "r1");
    assert_eq!(start["voice"], "en_US-joe-medium");
    assert!(
        start["trace_id"].as_str().is_some_and(|t| !t.is_empty()),
        "generated trace id"
    );
    let stream_id = start["stream_id"].as_u64().expect("stream_id") as u32;

    let mut samples = Vec::new();
    let mut frames = 0u32;
    let mut saw_last = false;
    let end = loop {
        match client.next_event().await.expect("event") {
            Event::Frame(bytes, _) => {
                assert!(!saw_last, "a frame after the last frame");
                assert_eq!(bytes.len(), 40 + 1920);
                let (header, payload) = decode_frame(&bytes).expect("well-formed frame");
                assert_eq!(header.stream_id, stream_id);
                assert_eq!(header.sequence, frames, "contiguous sequence");
                assert_eq!(
                    header.crc32c,
                    checksum(payload),
                    "CRC-32C of frame {frames}"
                );
                assert!(
                    header.worker_ts_us > 0 && header.orchestrator_ts_us >= header.worker_ts_us
                );
                saw_last = header.last;
                samples.extend(tts_frame::bytes_to_samples(payload));
                frames += 1;
            }
            Event::Json(v) => break v,
        }
    };
    assert!(saw_last, "the final frame carries the last flag");
    assert_eq!(end["type"], "end");
    assert_eq!(end["request_id"], "r1");
    assert_eq!(end["stream_id"], stream_id);
    assert_eq!(end["cancelled"], false);
    assert_eq!(end["frames"], frames);
    let exact = end["samples"].as_u64().expect("samples") as usize;
    assert!(exact <= frames as usize * 960 && exact > (frames as usize - 1) * 960);
    assert!(
        samples[exact..].iter().all(|&s| s == 0),
        "the last frame is zero-padded"
    );
    samples.truncate(exact);
    assert_speech_like(&samples, 15);

    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
