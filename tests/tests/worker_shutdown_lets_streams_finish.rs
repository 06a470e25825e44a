//! SIGTERM semantics of the worker: once told to stop, its health says
//! NOT_SERVING and new requests are refused with `worker_unavailable`, but
//! the stream already in progress is not cut: it completes.

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tts_client::{Client, ClientError, Collector, ErrorCode, Event, SynthesizeOptions};
use tts_orchestrator::OrchestratorConfig;
use tts_tests::{MEDIUM_TEXT, spawn_orchestrator, spawn_worker, worker_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_shutdown_lets_streams_finish() {
    let worker = spawn_worker(worker_config()).await;
    let pipeline = spawn_orchestrator(
        format!("http://{}", worker.addr),
        OrchestratorConfig::default(),
    )
    .await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", worker.addr))
        .expect("url")
        .connect()
        .await
        .expect("connect");

    let mut streaming = Client::connect(&pipeline.ws_url).await.expect("connect");
    let sent = std::time::Instant::now();
    let request_id = streaming
        .start(MEDIUM_TEXT, &SynthesizeOptions::default())
        .await
        .expect("send");
    let mut collector = Collector::new(request_id, sent);
    loop {
        let event = streaming.next_event().await.expect("event");
        let is_frame = matches!(event, Event::Frame(..));
        assert!(collector.on_event(event).expect("ok").is_none());
        if is_frame {
            break;
        }
    }

    worker.signal_stop();
    let status = |channel: tonic::transport::Channel| async move {
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: "tts.v1.Tts".into(),
            })
            .await
            .map(|r| r.into_inner().status)
    };
    let draining = tts_tests::eventually(std::time::Duration::from_secs(5), || {
        let channel = channel.clone();
        async move { status(channel).await.is_ok_and(|s| s == 2) }
    })
    .await;
    assert!(draining, "health did not turn NOT_SERVING");

    let mut late = Client::connect(&pipeline.ws_url).await.expect("connect");
    match late
        .synthesize("Too late.", &SynthesizeOptions::default())
        .await
    {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::WorkerUnavailable),
        other => panic!("expected worker_unavailable, got {other:?}"),
    }

    let done = streaming
        .collect(collector)
        .await
        .expect("the stream completes");
    assert!(!done.report.cancelled);
    assert!(done.report.last_flag_seen);
    assert_eq!(done.report.frames, done.report.end_frames);
    assert_eq!(done.report.integrity_failures(), 0);
    assert!(done.report.frames > 400, "{} frames", done.report.frames);

    drop((streaming, late));
    assert!(
        worker.join(std::time::Duration::from_secs(10)).await,
        "the worker stopped"
    );
    pipeline.orchestrator.stop().await;
}
