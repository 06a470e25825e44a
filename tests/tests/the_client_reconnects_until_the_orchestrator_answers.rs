//! `tts-client say` started before the orchestrator is up keeps trying:
//! a refused connection, then one dropped before any audio, are each
//! retried after a backoff, and the sentence is spoken once the
//! orchestrator answers.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tts_tests::{binary, free_port, repo_root, spawn_pipeline};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reconnects_until_the_orchestrator_answers() {
    // The pipeline is ready before the client starts (loading it takes
    // longer than the client's retries on a loaded machine); nothing
    // listens on the client's port until later.
    let (worker, pipeline) = spawn_pipeline().await;
    let port = free_port();
    let out = std::env::temp_dir().join(format!("tts-reconnect-{port}.wav"));
    let mut client = tokio::process::Command::new(binary("tts-client"))
        .args(["--url", &format!("ws://127.0.0.1:{port}/ws")])
        .args(["say", "The client waited for the orchestrator.", "--fast"])
        .arg("--out")
        .arg(&out)
        .current_dir(repo_root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("tts-client starts");
    let mut stderr = BufReader::new(client.stderr.take().expect("stderr")).lines();

    // Nothing listens yet: the client says it is reconnecting.
    let refused = tokio::time::timeout(Duration::from_secs(10), stderr.next_line())
        .await
        .expect("a line within 10 s")
        .expect("stderr")
        .expect("a line");
    assert!(
        refused.contains("reconnecting in"),
        "expected a reconnect after a refused connection: {refused}"
    );

    // The orchestrator comes up behind the port; the first connection it
    // is offered drops before the handshake.
    let upstream: SocketAddr = pipeline
        .ws_url
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .parse()
        .expect("the orchestrator's address");
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the client's port is still free");
    let forward = tokio::spawn(async move {
        let (first, _) = listener.accept().await.expect("first connection");
        drop(first);
        loop {
            let Ok((mut downstream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if let Ok(mut up) = TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut downstream, &mut up).await;
                }
            });
        }
    });

    let status = tokio::time::timeout(Duration::from_secs(60), client.wait())
        .await
        .expect("the client ends within 60 s")
        .expect("exit status");
    let mut said = Vec::new();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_millis(100), stderr.next_line()).await
    {
        said.push(line);
    }
    assert!(
        status.success(),
        "tts-client failed: {status}\n{}",
        said.join("\n")
    );
    assert!(
        said.iter().any(|l| l.contains("reconnecting in")),
        "the dropped connection was retried too: {said:?}"
    );
    let wav = hound::WavReader::open(&out).expect("the WAV was written");
    assert!(wav.duration() > 48_000, "about a second of speech or more");

    forward.abort();
    let _ = std::fs::remove_file(&out);
    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
