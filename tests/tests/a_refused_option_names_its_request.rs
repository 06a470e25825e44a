//! Every message refused by its checks names the request it was for: each
//! option out of range, each mistyped field and each invalid combination,
//! in a `synthesize` and in a `context_open`, gets `bad_request` with the
//! message's `request_id`; `tts-client say` with such an option exits 65
//! with the server's message instead of waiting for an answer.

use std::process::Command;

use serde_json::{Value, json};
use tts_client::{Client, ErrorCode, Event, ServerMessage};
use tts_tests::{binary, repo_root, spawn_pipeline};

/// Options the server refuses, one at a time or together.
fn invalid() -> Vec<(&'static str, Value)> {
    vec![
        ("speed above 4", json!({"speed": 9})),
        ("speed below 0.25", json!({"speed": 0.1})),
        ("noise_scale above 1", json!({"noise_scale": 2})),
        ("noise_w below 0", json!({"noise_w": -1})),
        ("unknown sample rate", json!({"sample_rate": 12345})),
        ("unknown encoding", json!({"encoding": "mp5"})),
        ("unknown delivery", json!({"delivery": "slow"})),
        ("mistyped timestamps", json!({"timestamps": "yes"})),
        ("mistyped voice", json!({"voice": 5})),
        (
            "opus at 8 kHz",
            json!({"encoding": "opus", "sample_rate": 8000}),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_option_names_its_request() {
    let (worker, pipeline) = spawn_pipeline().await;
    let mut client = Client::connect(&pipeline.ws_url).await.expect("connect");
    for (i, (what, options)) in invalid().into_iter().enumerate() {
        for kind in ["synthesize", "context_open"] {
            let request_id = format!("bad-{i}-{kind}");
            let mut message = json!({"type": kind, "request_id": request_id});
            if kind == "synthesize" {
                message["text"] = json!("Hello there.");
            }
            for (field, value) in options.as_object().expect("an object") {
                message[field] = value.clone();
            }
            client.send_json(&message).await.expect("send");
            let error = loop {
                match client.next_event().await.expect("an answer") {
                    Event::Message(e @ ServerMessage::Error { .. }) => break e,
                    Event::Message(ServerMessage::Start { .. }) | Event::Frame(..) => {
                        panic!("{kind} with {what} was accepted")
                    }
                    _ => {}
                }
            };
            let ServerMessage::Error {
                code,
                message,
                request_id: named,
                ..
            } = error
            else {
                unreachable!("matched above");
            };
            assert_eq!(code, ErrorCode::BadRequest, "{kind} with {what}: {message}");
            assert_eq!(
                named.as_deref(),
                Some(request_id.as_str()),
                "{kind} with {what}: the error names the request ({message})"
            );
        }
    }

    // The command line: the server's message and exit code 65 at once.
    let out = tokio::task::spawn_blocking({
        let url = pipeline.ws_url.clone();
        move || {
            Command::new(binary("tts-client"))
                .args(["--url", &url, "say", "Hello there.", "--speed", "9"])
                .arg("--out")
                .arg(std::env::temp_dir().join("tts-refused-option.wav"))
                .current_dir(repo_root())
                .output()
                .expect("tts-client runs")
        }
    })
    .await
    .expect("join");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{said}");
    assert!(said.contains("speed"), "the server's message: {said}");

    drop(client);
    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
