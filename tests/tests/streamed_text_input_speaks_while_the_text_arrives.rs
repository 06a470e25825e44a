//! Streamed text input (contexts): text arrives in token-sized pieces and
//! its audio starts while later pieces are still coming; the clauses join
//! into one stream of contiguous, verified frames with one `end`; `flush`
//! and a pause speak text that has no ending yet; bad pieces get coded
//! errors; cancel works as for any request.

use std::time::{Duration, Instant};

use serde_json::json;
use tts_client::{Client, Collector, Event, ServerMessage, Utterance};
use tts_tests::{assert_speech_like, spawn_pipeline};

/// Sends `pieces` (each after its delay) to context `id`, then `close`,
/// while collecting the context's audio. Returns the utterance and when
/// its first frame arrived relative to the close.
async fn speak_streamed(
    client: &mut Client,
    id: &str,
    pieces: &[(&str, u64)],
    close: bool,
) -> (Utterance, Option<Instant>, Instant) {
    let sent = Instant::now();
    client
        .send_json(&json!({"type": "context_open", "request_id": id}))
        .await
        .expect("open");
    let mut collector = Collector::new(id.to_owned(), sent);
    let mut next = 0;
    let mut due = tokio::time::Instant::now();
    let mut first_frame = None;
    let mut closed_at = Instant::now();
    loop {
        let pending = next <= pieces.len();
        tokio::select! {
            _ = tokio::time::sleep_until(due + Duration::from_millis(
                pieces.get(next).map_or(0, |p| p.1))), if pending => {
                due = tokio::time::Instant::now();
                match pieces.get(next) {
                    Some((text, _)) => client
                        .send_json(&json!({"type": "append", "request_id": id, "text": text}))
                        .await
                        .expect("append"),
                    None if close => {
                        closed_at = Instant::now();
                        client
                            .send_json(&json!({"type": "close", "request_id": id}))
                            .await
                            .expect("close");
                    }
                    None => {}
                }
                next += 1;
            }
            event = client.next_event() => {
                let event = event.expect("event");
                if matches!(event, Event::Frame(..)) && collector.stream_id().is_some() {
                    first_frame.get_or_insert_with(Instant::now);
                }
                if let Some(done) = collector.on_event(event).expect("no error") {
                    return (done, first_frame, closed_at);
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_text_input_speaks_while_the_text_arrives() {
    let (worker, pipeline) = spawn_pipeline().await;
    let mut client = Client::connect(&pipeline.ws_url).await.expect("connect");

    // Token by token, as a language model writes: the first sentence is
    // complete at the space after "there."; the rest trickles in over
    // about three more seconds.
    let tokens: Vec<(&str, u64)> = [
        "Hello", " there", ".", " This", " text", " arrives", " one", " word", " at", " a",
        " time", ",", " like", " a", " model", " writing", " it", ".",
    ]
    .iter()
    .map(|t| (*t, 200))
    .collect();
    let (u, first_frame, closed_at) = speak_streamed(&mut client, "ctx-1", &tokens, true).await;
    let r = &u.report;
    assert_eq!(r.integrity_failures(), 0, "{r:?}");
    assert_eq!(r.frames, r.end_frames);
    assert!(r.last_flag_seen, "the last frame is flagged");
    assert!(!r.cancelled);
    assert_speech_like(&u.samples, 16);
    let first = first_frame.expect("audio arrived");
    assert!(
        first < closed_at,
        "the first audio came after the text was complete: not streamed"
    );

    // Text with no ending: `flush` speaks it without closing the context.
    client
        .send_json(&json!({"type": "context_open", "request_id": "ctx-2"}))
        .await
        .expect("open");
    client
        .send_json(&json!({"type": "append", "request_id": "ctx-2", "text": "no ending yet"}))
        .await
        .expect("append");
    client
        .send_json(&json!({"type": "flush", "request_id": "ctx-2"}))
        .await
        .expect("flush");
    let mut frames = 0;
    while frames < 20 {
        if let Event::Frame(..) = client.next_event().await.expect("audio after flush") {
            frames += 1;
        }
    }
    // Pieces for contexts that do not exist, or beyond the text limit, are
    // refused with codes; the open context is unharmed.
    client
        .send_json(&json!({"type": "append", "request_id": "nope", "text": "x"}))
        .await
        .expect("send");
    let long = "a ".repeat(3000);
    client
        .send_json(&json!({"type": "append", "request_id": "ctx-2", "text": long}))
        .await
        .expect("send");
    client
        .send_json(&json!({"type": "cancel", "request_id": "ctx-2"}))
        .await
        .expect("cancel");
    let mut codes = Vec::new();
    let cancelled = loop {
        match client.next_event().await.expect("event") {
            Event::Message(ServerMessage::Error {
                code, request_id, ..
            }) => {
                codes.push((code.as_str().to_owned(), request_id));
            }
            Event::Message(ServerMessage::End {
                request_id,
                cancelled,
                ..
            }) if request_id == "ctx-2" => break cancelled,
            _ => {}
        }
    };
    assert!(cancelled, "cancel ends a context with cancelled: true");
    assert!(
        codes.contains(&("bad_request".into(), Some("nope".into()))),
        "{codes:?}"
    );
    assert!(
        codes.contains(&("text_too_long".into(), Some("ctx-2".into()))),
        "{codes:?}"
    );

    // A piece after `close` is refused, not lost.
    for message in [
        json!({"type": "context_open", "request_id": "ctx-4"}),
        json!({"type": "append", "request_id": "ctx-4", "text": "Short."}),
        json!({"type": "close", "request_id": "ctx-4"}),
        json!({"type": "append", "request_id": "ctx-4", "text": "Too late."}),
    ] {
        client.send_json(&message).await.expect("send");
    }
    let (mut refused, mut ended) = (false, false);
    while !(refused && ended) {
        match client.next_event().await.expect("event") {
            Event::Message(ServerMessage::Error {
                code, request_id, ..
            }) if request_id.as_deref() == Some("ctx-4") => {
                assert_eq!(code.as_str(), "bad_request");
                refused = true;
            }
            Event::Message(ServerMessage::End { request_id, .. }) if request_id == "ctx-4" => {
                ended = true;
            }
            _ => {}
        }
    }

    // A pause in text without an ending speaks it (after the idle limit).
    // The pause is long enough for first audio on a loaded machine.
    let pieces = [("waiting for more words", 0), ("", 5_000)];
    let (u, first_frame, closed_at) = speak_streamed(&mut client, "ctx-3", &pieces, true).await;
    assert_eq!(u.report.integrity_failures(), 0);
    assert!(
        first_frame.is_some_and(|f| f < closed_at),
        "the idle cut spoke before close"
    );

    pipeline.orchestrator.stop().await;
    worker.stop().await;
}

/// `tts-client say --stream-input` speaks standard input as it arrives: a
/// writer that pauses between sentences still gets one verified stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_speaks_standard_input_as_it_arrives() {
    use std::io::Write;
    let (worker, pipeline) = spawn_pipeline().await;
    let out = std::env::temp_dir().join(format!("stream-input-{}.wav", std::process::id()));
    let mut child = std::process::Command::new(tts_tests::binary("tts-client"))
        .args([
            "--url",
            &pipeline.ws_url,
            "say",
            "--stream-input",
            "--json",
            "--out",
        ])
        .arg(&out)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tts-client starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = tokio::task::spawn_blocking(move || {
        for piece in [
            "The first sentence arrives. ",
            "Then, after a pause, ",
            "the second one.",
        ] {
            stdin.write_all(piece.as_bytes()).expect("write");
            stdin.flush().expect("flush");
            std::thread::sleep(Duration::from_millis(700));
        }
        // Dropping stdin is the end of the text.
    });
    writer.await.expect("writer");
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("tts-client ends");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(report["checksum_failures"], 0, "{report}");
    assert_eq!(report["frames"], report["end_frames"], "{report}");
    let wav = std::fs::read(&out).expect("WAV written");
    let _ = std::fs::remove_file(&out);
    let samples: Vec<i16> = wav[44..]
        .chunks_exact(2)
        .map(|p| i16::from_le_bytes([p[0], p[1]]))
        .collect();
    assert_speech_like(&samples, 11);
    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
