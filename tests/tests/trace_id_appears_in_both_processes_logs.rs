//! The worker and the orchestrator run as separate processes with JSON logs;
//! a request's trace id appears in both logs, every line about a request
//! (WebSocket or HTTP, spoken or refused) carries its `request_id`,
//! `trace_id` and `session_id`, and `doctor trace` rebuilds its timeline
//! across them.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tts_client::doctor::Status;
use tts_client::{Client, SynthesizeOptions};
use tts_tests::{binary, eventually, free_port, http_post, repo_root};

/// The trace ids of the HTTP requests: one spoken, one refused for its body.
const HTTP_SPOKEN: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const HTTP_REFUSED: &str = "5ca03a4688c45eb7b4df03ae1f1f5847";

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(name: &str, args: &[String], log: &std::path::Path) -> Process {
    let file = std::fs::File::create(log).expect("log file");
    let child = Command::new(binary(name))
        .args(args)
        .current_dir(repo_root())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("start");
    Process(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_id_appears_in_both_processes_logs() {
    let dir = std::env::temp_dir().join(format!("tts-trace-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (worker_log, orch_log) = (dir.join("worker.log"), dir.join("orchestrator.log"));
    let (grpc, metrics, ws, admin) = (free_port(), free_port(), free_port(), free_port());
    let _worker = start(
        "tts-worker",
        &[
            format!("--listen=127.0.0.1:{grpc}"),
            format!("--metrics-listen=127.0.0.1:{metrics}"),
        ],
        &worker_log,
    );
    let _orchestrator = start(
        "tts-orchestrator",
        &[
            format!("--listen=127.0.0.1:{ws}"),
            format!("--admin-listen=127.0.0.1:{admin}"),
            format!("--worker=http://127.0.0.1:{grpc}"),
        ],
        &orch_log,
    );
    let admin_addr: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().expect("addr");
    let ready = eventually(Duration::from_secs(60), || async move {
        tokio::net::TcpStream::connect(admin_addr).await.is_ok()
            && tts_tests::http_get(admin_addr, "/ready").await.0 == 200
    })
    .await;
    assert!(ready, "the processes did not become ready");

    let trace = "0af7651916cd43dd8448eb211c80319c";
    let mut client = Client::connect(&format!("ws://127.0.0.1:{ws}/ws"))
        .await
        .expect("connect");
    let opts = SynthesizeOptions {
        trace_id: Some(trace.into()),
        ..SynthesizeOptions::default()
    };
    let u = client
        .synthesize("Follow me through the logs.", &opts)
        .await
        .expect("synthesis");
    assert_eq!(u.report.trace_id, trace);
    drop(client);
    http_requests(format!("127.0.0.1:{ws}").parse().expect("addr")).await;

    // Logs are written as things happen; wait for the last lines.
    let finished = eventually(Duration::from_secs(10), || async {
        let lines = json_lines(&orch_log);
        [trace, HTTP_SPOKEN]
            .iter()
            .all(|t| find(&lines, t, "request finished").is_some())
    })
    .await;
    assert!(finished, "no \"request finished\" for each request");
    let (orch, worker) = (json_lines(&orch_log), json_lines(&worker_log));
    for (lines, message) in [
        (&orch, "request accepted"),
        (&orch, "request finished"),
        (&worker, "synthesis queued"),
        (&worker, "synthesis finished"),
    ] {
        let line = with_ids(lines, trace, message);
        assert_eq!(line["request_id"], u.report.request_id.as_str(), "{line}");
    }
    check_http_lines(&orch, &worker);
    for (lines, component) in [(&worker, "worker"), (&orch, "orchestrator")] {
        let about: Vec<_> = lines.iter().filter(|l| l["trace_id"] == trace).collect();
        assert!(
            about.len() >= 2,
            "{component} logged {} lines with the trace id",
            about.len()
        );
        for line in about {
            assert_eq!(line["component"], component, "{line}");
            assert_eq!(line["request_id"], u.report.request_id.as_str(), "{line}");
            assert!(
                line["session_id"].as_str().is_some_and(|s| !s.is_empty()),
                "{line}"
            );
        }
    }

    let findings = tts_client::doctor::trace::run(trace, &[orch_log.clone(), worker_log.clone()])
        .expect("read logs");
    assert_eq!(findings.status, Status::Ok);
    let steps = findings.detail["steps"].as_array().expect("steps");
    let components: Vec<&str> = steps
        .iter()
        .map(|s| s["component"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(components.first(), Some(&"orchestrator"), "{components:?}");
    assert!(components.contains(&"worker"), "{components:?}");
    let offsets: Vec<f64> = steps
        .iter()
        .map(|s| s["offset_ms"].as_f64().unwrap_or(-1.0))
        .collect();
    assert!(
        offsets.windows(2).all(|w| w[0] <= w[1]),
        "sorted by time: {offsets:?}"
    );
    let messages: Vec<&str> = steps
        .iter()
        .map(|s| s["message"].as_str().unwrap_or(""))
        .collect();
    assert!(messages.contains(&"request accepted") && messages.contains(&"synthesis queued"));
    assert_eq!(messages.last(), Some(&"request finished"), "{messages:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An HTTP request refused for its body (no `input`) and one spoken, each
/// with its trace id in a `traceparent` header.
async fn http_requests(addr: SocketAddr) {
    let traceparent = |trace: &str| format!("traceparent: 00-{trace}-00f067aa0ba902b7-01");
    let path = "/v1/audio/speech";
    let no_input = r#"{"model":"tts-1"}"#;
    let refused = http_post(addr, path, no_input, &[&traceparent(HTTP_REFUSED)]).await;
    assert_eq!(refused.status, 400, "{}", refused.headers);
    let body = r#"{"model":"tts-1","input":"Over HTTP.","response_format":"pcm"}"#;
    let spoken = http_post(addr, path, body, &[&traceparent(HTTP_SPOKEN)]).await;
    assert_eq!(spoken.status, 200, "{}", spoken.headers);
    assert!(!spoken.body.is_empty());
}

/// The HTTP requests' lines carry their ids from the request's span: the
/// refusal, and the spoken request's lines in both processes.
fn check_http_lines(orch: &[Value], worker: &[Value]) {
    let refused = with_ids(orch, HTTP_REFUSED, "http request refused");
    assert_eq!(refused["field"], "input", "{refused}");
    let session = refused["session_id"].as_str().unwrap_or("");
    assert!(session.starts_with("http-"), "{refused}");
    let accepted = with_ids(orch, HTTP_SPOKEN, "http request accepted");
    let request_id = &accepted["request_id"];
    for (lines, message) in [(orch, "request finished"), (worker, "synthesis queued")] {
        let line = with_ids(lines, HTTP_SPOKEN, message);
        assert_eq!(&line["request_id"], request_id, "{line}");
        assert_eq!(line["session_id"], accepted["session_id"], "{line}");
    }
}

/// A log file's complete lines, each a JSON object; none while it is not
/// there.
fn json_lines(log: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

fn find<'a>(lines: &'a [Value], trace: &str, message: &str) -> Option<&'a Value> {
    lines
        .iter()
        .find(|l| l["trace_id"] == trace && l["message"] == message)
}

/// The line with this trace id and message, which carries all three ids
/// at its top level.
fn with_ids<'a>(lines: &'a [Value], trace: &str, message: &str) -> &'a Value {
    let line = find(lines, trace, message)
        .unwrap_or_else(|| panic!("no {message:?} line with trace id {trace}: {lines:#?}"));
    for id in ["request_id", "trace_id", "session_id"] {
        let value = line[id].as_str().unwrap_or("");
        assert!(!value.is_empty(), "{id} on {line}");
    }
    line
}
