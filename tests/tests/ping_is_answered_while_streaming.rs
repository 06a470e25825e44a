//! A ping sent while a long text is streaming is answered at once, ahead of
//! the queued audio: with the client's queue full behind a socket its
//! reader has stopped emptying, the pong comes before the queue's frames.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use tokio::net::TcpSocket;
use tts_client::{Client, Event, ServerMessage, SynthesizeOptions};
use tts_orchestrator::OrchestratorConfig;
use tts_tests::{LONG_TEXT, eventually, spawn_orchestrator, spawn_worker, worker_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_is_answered_while_streaming() {
    let worker = spawn_worker(worker_config()).await;
    // A small kernel send buffer: the queue, not the kernel, holds the
    // frames the client has not read.
    let config = OrchestratorConfig {
        ws_send_buffer_bytes: 4096,
        ..OrchestratorConfig::default()
    };
    let queue = config.client_queue_frames as u64;
    let pipeline = spawn_orchestrator(format!("http://{}", worker.addr), config).await;
    let stats = pipeline.stats.clone();

    // A small receive buffer too, so that the client's kernel holds few.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(8 * 1024).expect("rcvbuf");
    let tcp = socket
        .connect(pipeline.orchestrator.addr)
        .await
        .expect("connect");
    let mut client = Client::connect_over(&pipeline.ws_url, tcp)
        .await
        .expect("handshake");
    let fast = SynthesizeOptions {
        fast: true,
        ..SynthesizeOptions::default()
    };
    client.start(LONG_TEXT, &fast).await.expect("send");
    // Read the start and the first frame, then stop reading until the
    // client's queue is full.
    while !matches!(client.next_event().await.expect("event"), Event::Frame(..)) {}
    let full = eventually(Duration::from_secs(10), || {
        let buffered = stats.frames_buffered.load(Ordering::Relaxed);
        async move { buffered >= queue }
    })
    .await;
    assert!(full, "the client's queue never filled");

    client
        .send_json(&json!({"type": "ping", "id": 42}))
        .await
        .expect("ping");
    let mut frames_before_pong = 0;
    let (id, server_time_us) = loop {
        match client.next_event().await.expect("event") {
            Event::Frame(..) => frames_before_pong += 1,
            Event::Message(ServerMessage::Pong {
                id, server_time_us, ..
            }) => break (id, server_time_us),
            Event::Message(m @ ServerMessage::End { .. }) => {
                panic!("stream ended before the pong: {m:?}")
            }
            _ => {}
        }
    };
    assert_eq!(id, 42);
    assert!(server_time_us > 1_600_000_000_000_000);
    // Frames already in the sockets' buffers may precede the pong, but not
    // the queue's: a writer that kept to arrival order would send all of
    // them first.
    assert!(
        frames_before_pong < queue,
        "{frames_before_pong} frames before the pong; {queue} were queued when the ping was sent"
    );

    drop(client);
    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
