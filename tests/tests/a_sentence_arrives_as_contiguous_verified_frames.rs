//! A sentence comes back as contiguous frames with valid checksums, `end`
//! counts exactly what was received, and the audio sounds like speech.

use tts_client::{Client, Event, ServerMessage};
use tts_frame::{checksum, decode_frame};
use tts_tests::{assert_speech_like, spawn_pipeline};

const TEXT: &str = "The quick brown fox jumps over the lazy dog. This is a streaming speech test.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentence_arrives_as_contiguous_verified_frames() {
    let (worker, pipeline) = spawn_pipeline().await;
    let mut client = Client::connect(&pipeline.ws_url).await.expect("connect");
    let ServerMessage::Ready {
        session_id,
        protocol,
        sample_rate,
        channels,
        frame_samples,
        encoding,
    } = &client.ready
    else {
        panic!("not ready: {:?}", client.ready);
    };
    assert_eq!(
        (
            *protocol,
            *sample_rate,
            *channels,
            *frame_samples,
            encoding.as_str()
        ),
        (1, 48_000, 1, 960, "pcm_s16le")
    );
    assert!(!session_id.is_empty());

    client
        .send_json(&serde_json::json!({"type": "synthesize", "text": TEXT, "request_id": "r1"}))
        .await
        .expect("send");

    let stream_id = match client.next_event().await.expect("start") {
        Event::Message(ServerMessage::Start {
            request_id,
            trace_id,
            stream_id,
            voice,
            sample_rate,
            encoding,
            frame_samples,
        }) => {
            assert_eq!(request_id, "r1");
            assert_eq!(
                (sample_rate, encoding.as_str(), frame_samples),
                (48_000, "pcm_s16le", 960)
            );
            assert_eq!(voice, "en_US-joe-medium");
            assert!(!trace_id.is_empty(), "generated trace id");
            stream_id
        }
        other => panic!("expected start, got {other:?}"),
    };

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
            Event::Message(m) => break m,
            Event::Other(v) => panic!("unexpected {v}"),
        }
    };
    assert!(saw_last, "the final frame carries the last flag");
    let ServerMessage::End {
        request_id,
        stream_id: end_stream,
        frames: end_frames,
        samples: exact,
        cancelled,
    } = end
    else {
        panic!("expected end, got {end:?}");
    };
    assert_eq!(request_id, "r1");
    assert_eq!(end_stream, stream_id);
    assert!(!cancelled);
    assert_eq!(end_frames, u64::from(frames));
    let exact = exact as usize;
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
