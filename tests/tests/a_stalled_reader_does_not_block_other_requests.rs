//! With a single synthesis thread, a client that stops reading a long text
//! does not hold that thread: another client's request still completes.

use std::time::Duration;

use tokio::net::TcpSocket;
use tts_client::{Client, SynthesizeOptions};
use tts_orchestrator::OrchestratorConfig;
use tts_tests::{LONG_TEXT, spawn_orchestrator, spawn_worker, worker_config};
use tts_worker::WorkerConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_does_not_block_other_requests() {
    let worker = spawn_worker(WorkerConfig {
        synthesis_threads: 1,
        ..worker_config()
    })
    .await;
    let pipeline = spawn_orchestrator(
        format!("http://{}", worker.addr),
        OrchestratorConfig::default(),
    )
    .await;

    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(8 * 1024).expect("rcvbuf");
    let tcp = socket
        .connect(pipeline.orchestrator.addr)
        .await
        .expect("connect");
    let mut stalled = Client::connect_over(&pipeline.ws_url, tcp)
        .await
        .expect("handshake");
    stalled
        .start(LONG_TEXT, &SynthesizeOptions::default())
        .await
        .expect("send");
    // Let the long request fill every queue on its path, then never read.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut other = Client::connect(&pipeline.ws_url).await.expect("connect");
    other.timeout = Duration::from_secs(20);
    let u = other
        .synthesize("I am not kept waiting.", &SynthesizeOptions::default())
        .await
        .expect("the second request completes while the first is stalled");
    assert!(u.report.frames > 20 && u.report.integrity_failures() == 0);

    drop((stalled, other));
    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
