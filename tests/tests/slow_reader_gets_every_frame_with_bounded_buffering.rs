//! A client that stops reading for several seconds during a long text, then
//! resumes, receives every frame in order with valid checksums, while the
//! orchestrator's buffered frames stayed under the configured bound and the
//! worker stopped producing (backpressure reached it).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::net::TcpSocket;
use tts_client::{Client, Collector, SynthesizeOptions};
use tts_orchestrator::OrchestratorConfig;
use tts_tests::{LONG_TEXT, eventually, spawn_orchestrator, spawn_worker, worker_config};

const QUEUE_FRAMES: usize = 25;
/// How long the full pipeline is watched for frames that still leave the
/// worker.
const HELD_WINDOW: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_gets_every_frame_with_bounded_buffering() {
    let worker = spawn_worker(worker_config()).await;
    let config = OrchestratorConfig {
        client_queue_frames: QUEUE_FRAMES,
        ..OrchestratorConfig::default()
    };
    let pipeline = spawn_orchestrator(format!("http://{}", worker.addr), config).await;
    let stats = pipeline.stats.clone();

    // A small receive window, so that the kernel cannot absorb the stream.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(8 * 1024).expect("rcvbuf");
    let tcp = socket
        .connect(pipeline.orchestrator.addr)
        .await
        .expect("connect");
    let mut client = Client::connect_over(&pipeline.ws_url, tcp)
        .await
        .expect("handshake");

    let sent = std::time::Instant::now();
    let request_id = client
        .start(LONG_TEXT, &SynthesizeOptions::default())
        .await
        .expect("send");
    let mut collector = Collector::new(request_id, sent);
    // Read the start and a few frames, then stop reading.
    let mut events = 0;
    while events < 5 {
        let e = client.next_event().await.expect("event");
        assert!(collector.on_event(e).expect("ok").is_none());
        events += 1;
    }

    // The pipeline fills up to the client's queue, then holds.
    let full = eventually(Duration::from_secs(10), || {
        let buffered = stats.frames_buffered.load(Ordering::Relaxed);
        async move { buffered >= QUEUE_FRAMES as u64 }
    })
    .await;
    assert!(full, "the client's queue never filled");
    // The frame the relay holds, and those already on the gRPC stream,
    // arrive just after the queue fills: wait for the count to settle
    // (unchanged for three looks in a row: a loaded machine may pause a
    // still-flowing stream for one).
    let settle_by = Instant::now() + Duration::from_secs(15);
    let mut received_mid_pause = stats.frames_received.load(Ordering::Relaxed);
    let mut quiet = 0;
    while quiet < 3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let now = stats.frames_received.load(Ordering::Relaxed);
        if now == received_mid_pause {
            quiet += 1;
            continue;
        }
        assert!(
            Instant::now() < settle_by,
            "frames kept arriving from the worker"
        );
        quiet = 0;
        received_mid_pause = now;
    }
    tokio::time::sleep(HELD_WINDOW).await;
    let received_end_pause = stats.frames_received.load(Ordering::Relaxed);
    let high_water = stats.frames_buffered_high_water.load(Ordering::Relaxed);

    // Resume and read everything.
    let utterance = loop {
        let e = client.next_event().await.expect("event");
        if let Some(done) = collector.on_event(e).expect("no error") {
            break done;
        }
    };
    let report = &utterance.report;
    assert_eq!(report.integrity_failures(), 0, "{report:?}");
    assert_eq!(report.frames, report.end_frames, "every frame arrived");
    assert!(report.last_flag_seen);
    let total = report.frames;
    assert!(total > 1_500, "{total} frames: the text is long");

    eprintln!("high water {high_water}, received during pause {received_end_pause}, total {total}");
    // One request in flight: the queue plus the frame its relay holds.
    assert!(
        high_water <= QUEUE_FRAMES as u64 + 1,
        "buffered frames peaked at {high_water}, bound {QUEUE_FRAMES}"
    );
    // The worker was held: nothing more arrived once the pipeline was
    // full, and most of the text was not yet synthesised.
    assert_eq!(
        received_mid_pause, received_end_pause,
        "the worker kept producing"
    );
    assert!(
        received_end_pause * 3 < total,
        "{received_end_pause} of {total} frames left the worker during the pause"
    );

    drop(client);
    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
