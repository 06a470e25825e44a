//! With a single synthesis thread, a client that stops reading a long text
//! does not hold that thread: another client's request still completes,
//! promptly, and the stalled request's audio is held, not lost: when its
//! client reads again it gets every frame.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::net::TcpSocket;
use tts_client::{Client, Collector, SynthesizeOptions};
use tts_orchestrator::OrchestratorConfig;
use tts_tests::{LONG_TEXT, eventually, spawn_orchestrator, spawn_worker, worker_config};
use tts_worker::WorkerConfig;

/// The other client's first audio comes within this, stall or not.
const PROMPT_MS: f64 = 5_000.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_does_not_block_other_requests() {
    let worker = spawn_worker(WorkerConfig {
        synthesis_threads: 1,
        ..worker_config()
    })
    .await;
    // The stalled client is not ended for its stall while the test runs.
    let config = OrchestratorConfig {
        stalled_stream_secs: 60.0,
        ..OrchestratorConfig::default()
    };
    let queue = config.client_queue_frames as u64;
    let pipeline = spawn_orchestrator(format!("http://{}", worker.addr), config).await;
    let stats = pipeline.stats.clone();

    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(8 * 1024).expect("rcvbuf");
    let tcp = socket
        .connect(pipeline.orchestrator.addr)
        .await
        .expect("connect");
    let mut stalled = Client::connect_over(&pipeline.ws_url, tcp)
        .await
        .expect("handshake");
    stalled.timeout = Duration::from_secs(60);
    let sent = Instant::now();
    let request_id = stalled
        .start(LONG_TEXT, &SynthesizeOptions::default())
        .await
        .expect("send");
    // Read the start and a few frames, then never read until the other
    // request is done: the long request fills every queue on its path.
    let mut collector = Collector::new(request_id, sent);
    for _ in 0..6 {
        let event = stalled.next_event().await.expect("event");
        assert!(collector.on_event(event).expect("no error").is_none());
    }
    let full = eventually(Duration::from_secs(10), || {
        let buffered = stats.frames_buffered.load(Ordering::Relaxed);
        async move { buffered >= queue }
    })
    .await;
    assert!(full, "the stalled client's queue never filled");

    let mut other = Client::connect(&pipeline.ws_url).await.expect("connect");
    other.timeout = Duration::from_secs(20);
    let u = other
        .synthesize("I am not kept waiting.", &SynthesizeOptions::default())
        .await
        .expect("the second request completes while the first is stalled");
    assert!(u.report.frames > 20 && u.report.integrity_failures() == 0);
    assert!(
        u.report.time_to_first_audio_ms < PROMPT_MS,
        "the other request waited {:.0} ms for its first audio",
        u.report.time_to_first_audio_ms
    );

    // The stalled client reads again: its request ends intact.
    let resumed = stalled
        .collect(collector)
        .await
        .expect("the stalled request ends when its client reads again");
    let report = &resumed.report;
    assert_eq!(report.integrity_failures(), 0, "{report:?}");
    assert_eq!(
        report.frames, report.end_frames,
        "every frame of the stalled request arrived"
    );

    drop((stalled, other));
    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
