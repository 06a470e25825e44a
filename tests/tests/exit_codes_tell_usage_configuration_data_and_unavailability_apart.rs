//! Every binary exits with the same codes for the same kinds of trouble:
//! 2 for a usage mistake, 64 for a bad configuration, 65 for bad data (a
//! request the server refused as the client's mistake), 69 for a service
//! that is not there.

use std::process::Command;

use tts_orchestrator::OrchestratorConfig;
use tts_tests::{binary, free_port, repo_root, spawn_orchestrator, spawn_worker, worker_config};

fn code(name: &str, args: &[&str]) -> Option<i32> {
    Command::new(binary(name))
        .args(args)
        .current_dir(repo_root())
        .env_remove("TTS_URL")
        .output()
        .expect("the binary runs")
        .status
        .code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_tell_usage_configuration_data_and_unavailability_apart() {
    let nowhere = format!("ws://127.0.0.1:{}/ws", free_port());
    let usage = [
        ("tts-client", vec!["say", "--no-such-flag"]),
        ("tts-worker", vec!["--no-such-flag"]),
        ("tts-orchestrator", vec!["--no-such-flag"]),
        ("tts-pipeline", vec!["--no-such-flag"]),
        ("tts-loadtest", vec!["--no-such-flag"]),
    ];
    let config = [
        ("tts-worker", vec!["--synthesis-threads", "0"]),
        (
            "tts-worker",
            vec![
                "--voice-dir",
                "/nonexistent",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ],
        ),
        ("tts-orchestrator", vec!["--worker", "ftp://x"]),
        ("tts-pipeline", vec!["--max-connections", "0"]),
    ];
    let unavailable = [
        (
            "tts-client",
            vec!["--url", nowhere.as_str(), "say", "Hello."],
        ),
        (
            "tts-loadtest",
            vec![
                "--url",
                nowhere.as_str(),
                "-n",
                "1",
                "--ping-interval",
                "0s",
                "--quiet",
            ],
        ),
    ];
    // A live pipeline that refuses a request as the client's mistake.
    let worker = spawn_worker(worker_config()).await;
    let pipeline = spawn_orchestrator(
        format!("http://{}", worker.addr),
        OrchestratorConfig::default(),
    )
    .await;
    let live = pipeline.ws_url.clone();
    let data = [(
        "tts-client",
        vec!["--url", live.as_str(), "say", "--voice", "nope", "Hi."],
    )];
    let cases = usage
        .into_iter()
        .map(|(b, a)| (b, a, 2))
        .chain(config.into_iter().map(|(b, a)| (b, a, 64)))
        .chain(data.into_iter().map(|(b, a)| (b, a, 65)))
        .chain(unavailable.into_iter().map(|(b, a)| (b, a, 69)));
    for (name, args, expected) in cases {
        let got = tokio::task::spawn_blocking({
            let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
            move || code(name, &args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await
        .expect("join");
        assert_eq!(got, Some(expected), "{name} {args:?}");
    }
    pipeline.orchestrator.stop().await;
    worker.stop().await;
}

fn stdout_and_stderr(name: &str, args: &[&str]) -> (String, String) {
    let out = Command::new(binary(name))
        .args(args)
        .current_dir(repo_root())
        .env_remove("TTS_URL")
        .env_remove("TTS_ORCHESTRATOR_ADMIN")
        .output()
        .expect("the binary runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One exit-code table: every binary's `--help` ends with the code's
/// table, and the README and the runbook show the same rows.
#[test]
fn the_exit_code_table_is_the_same_in_the_code_the_help_and_the_docs() {
    let help = tts_telemetry::exit::help();
    for name in [
        "tts-client",
        "tts-worker",
        "tts-orchestrator",
        "tts-pipeline",
        "tts-loadtest",
    ] {
        let (out, _) = stdout_and_stderr(name, &["--help"]);
        assert!(out.contains(&help), "{name} --help:\n{out}");
    }
    let table = tts_telemetry::exit::markdown();
    for doc in ["README.md", "docs/runbook.md"] {
        let text = std::fs::read_to_string(repo_root().join(doc)).expect("doc");
        assert!(
            text.contains(&table),
            "{doc} lacks the exit-code table:\n{table}"
        );
    }
}

/// Help that matches behaviour: `--url` is offered only by commands that
/// use it, and nothing at the default admin address says which flag
/// names it.
#[test]
fn help_offers_only_what_each_command_uses_and_defaults_say_how_to_change() {
    let (trace, _) = stdout_and_stderr("tts-client", &["doctor", "trace", "--help"]);
    assert!(!trace.contains("--url"), "{trace}");
    let (rtt, _) = stdout_and_stderr("tts-client", &["doctor", "rtt", "--help"]);
    assert!(rtt.contains("--url"), "{rtt}");
    // Only where nothing listens on the default admin port.
    if std::net::TcpStream::connect("127.0.0.1:8081").is_ok() {
        eprintln!("something listens on 127.0.0.1:8081: the hint is not checked");
        return;
    }
    let (_, hint) = stdout_and_stderr("tts-client", &["doctor", "health"]);
    assert!(
        hint.contains("--orchestrator (or TTS_ORCHESTRATOR_ADMIN)"),
        "{hint}"
    );
}
