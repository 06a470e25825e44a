//! However the worker goes away mid-stream — killed, frozen (SIGSTOP), or
//! shut down past its grace period — the client gets `worker_unavailable`
//! for the request, a frozen worker is noticed within about two seconds,
//! and the connection stays open for the next request.

use std::time::{Duration, Instant};

use tts_client::{Client, Event, ServerMessage, SynthesizeOptions};
use tts_orchestrator::OrchestratorConfig;
use tts_tests::{LONG_TEXT, ServiceProcess, spawn_orchestrator};

/// Starts a long request and waits for its first frame.
async fn streaming(client: &mut Client) -> String {
    let id = client
        .start(LONG_TEXT, &SynthesizeOptions::default())
        .await
        .expect("send");
    loop {
        if let Event::Frame(..) = client.next_event().await.expect("event") {
            return id;
        }
    }
}

/// Reads until the request's `error`; returns its code and how long it
/// took from now.
async fn error_for(client: &mut Client, id: &str) -> (String, Duration) {
    let since = Instant::now();
    loop {
        if let Event::Message(m) = client.next_event().await.expect("event")
            && m.request_id() == Some(id)
        {
            let ServerMessage::Error { code, .. } = m else {
                panic!("expected an error, got {m:?}");
            };
            return (code.as_str().to_owned(), since.elapsed());
        }
    }
}

async fn scenario(
    name: &str,
    worker_args: &[&str],
    kill: impl FnOnce(&ServiceProcess),
) -> Duration {
    let worker = ServiceProcess::worker(worker_args).await;
    let pipeline = spawn_orchestrator(
        format!("http://{}", worker.addr),
        OrchestratorConfig::default(),
    )
    .await;
    let mut client = Client::connect(&pipeline.ws_url).await.expect("connect");
    client.timeout = Duration::from_secs(30);
    let id = streaming(&mut client).await;
    kill(&worker);
    let (code, took) = error_for(&mut client, &id).await;
    assert_eq!(code, "worker_unavailable", "{name}");
    eprintln!("{name}: worker_unavailable {took:?} after the signal");
    // The connection survives.
    client.ping(1).await.expect("the connection stays open");
    drop(worker);
    pipeline.orchestrator.stop().await;
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_loss_of_any_kind_is_worker_unavailable() {
    scenario("SIGKILL", &[], |w| w.signal("KILL")).await;
    let frozen = scenario("SIGSTOP", &[], |w| w.signal("STOP")).await;
    // Keepalive pings every second with a one-second timeout: the loss is
    // seen within about two seconds (allowing for a loaded machine).
    assert!(
        frozen < Duration::from_secs(6),
        "a frozen worker took {frozen:?}"
    );
    // Draining lets streams finish as fast as they can; a minute of audio
    // does not fit into a one-second grace period.
    scenario(
        "SIGTERM past grace",
        &["--shutdown-grace-secs", "1", "--drain-notice-secs", "0"],
        |w| w.signal("TERM"),
    )
    .await;
}
