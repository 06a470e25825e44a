//! The worker and the orchestrator run as separate processes with JSON logs;
//! a request's trace id appears in both logs, and `doctor trace` rebuilds
//! its timeline across them.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tts_client::doctor::Status;
use tts_client::{Client, SynthesizeOptions};
use tts_tests::{binary, eventually, free_port, repo_root};

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

    // Logs are written as things happen; wait for the last line.
    let finished = eventually(Duration::from_secs(10), || async {
        std::fs::read_to_string(&orch_log).is_ok_and(|t| t.contains("request finished"))
    })
    .await;
    assert!(finished);
    for (log, component) in [(&worker_log, "worker"), (&orch_log, "orchestrator")] {
        let text = std::fs::read_to_string(log).expect("log");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))
            })
            .collect();
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
