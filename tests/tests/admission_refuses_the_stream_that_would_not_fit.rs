//! With a voice whose every step costs a fixed time (so capacity is the same
//! on any machine), the worker admits as many streams as its threads keep in
//! real time, refuses the next one at once with `overloaded` and a retry
//! hint, and the admitted streams play without a late frame, while one of
//! their clients stops reading.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tts_client::{Client, ErrorCode, Event, ServerMessage, SynthesizeOptions};
use tts_frame::{checksum, decode_frame};
use tts_loadtest::record::{Arrival, late_frames};
use tts_orchestrator::OrchestratorConfig;
use tts_tests::{sample, spawn_orchestrator_metered, spawn_worker, worker_config};
use tts_worker::engine::FixedCost;

/// 0.3 s of compute per second of audio: two threads at 80 % (1.6 threads)
/// keep five streams (1.5) in real time, not six (1.8).
const COST: FixedCost = FixedCost {
    step_audio: Duration::from_millis(500),
    step_time: Duration::from_millis(150),
    audio_per_char: Duration::from_millis(50),
};
const FIT: usize = 5;

/// Reads one stream's frames until told to stop; returns their arrivals.
async fn listen(
    mut client: Client,
    sent: Instant,
    mut stop: watch::Receiver<bool>,
) -> Vec<Arrival> {
    let mut arrivals = Vec::new();
    loop {
        let event = tokio::select! {
            _ = stop.changed() => return arrivals,
            e = client.next_event() => e.expect("the stream continues"),
        };
        if let Event::Frame(bytes, at) = event {
            let (header, payload) = decode_frame(&bytes).expect("a well-formed frame");
            arrivals.push(Arrival {
                sequence: header.sequence,
                at: at.duration_since(sent),
                worker_to_orchestrator_us: 0,
                orchestrator_to_client_us: 0,
                checksum_ok: checksum(payload) == header.crc32c,
            });
        }
    }
}

/// Starts a long request; returns the client once its first frame is in,
/// or the `error` message that refused it.
async fn open(url: &str, text: &str) -> Result<(Client, Instant), (ServerMessage, Duration)> {
    let mut client = Client::connect(url).await.expect("connect");
    let sent = Instant::now();
    client
        .start(text, &SynthesizeOptions::default())
        .await
        .expect("send");
    loop {
        match client.next_event().await.expect("an answer") {
            Event::Frame(..) => return Ok((client, sent)),
            Event::Message(m @ ServerMessage::Error { .. }) => return Err((m, sent.elapsed())),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admission_refuses_the_stream_that_would_not_fit() {
    let metrics = tts_telemetry::install_metrics().expect("recorder");
    let mut config = worker_config();
    config.fixed_cost = Some(COST);
    config.synthesis_threads = 2;
    config.admission_efficiency = 0.8;
    // The scheduler's largest step: 43 latent frames ≈ 0.5 s, this voice's step.
    config.max_window_frames = 43;
    let worker = spawn_worker(config).await;
    let pipeline = spawn_orchestrator_metered(
        format!("http://{}", worker.addr),
        OrchestratorConfig::default(),
        None,
    )
    .await;
    // 1,000 characters: 50 s of audio per stream.
    let text = "word ".repeat(200);

    let (stop, stopped) = watch::channel(false);
    let mut listeners = Vec::new();
    let mut stalled = None;
    let refusal = loop {
        match open(&pipeline.ws_url, &text).await {
            Ok((client, sent)) => {
                assert!(
                    listeners.len() < FIT + 1,
                    "more than {FIT} streams admitted"
                );
                if stalled.is_none() && listeners.len() == 1 {
                    // This client never reads again.
                    stalled = Some(client);
                } else {
                    listeners.push(tokio::spawn(listen(client, sent, stopped.clone())));
                }
                // Let the new stream get ahead of its clock before the next.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(refusal) => break refusal,
        }
    };
    let admitted = listeners.len() + usize::from(stalled.is_some());
    assert_eq!(admitted, FIT, "admitted streams");
    let (error, took) = refusal;
    let ServerMessage::Error {
        code: ErrorCode::Overloaded,
        retry_after_ms: Some(retry),
        ..
    } = error
    else {
        panic!("expected overloaded with a retry hint, got {error:?}");
    };
    assert!(retry > 0);
    eprintln!("refused after {took:?}, retry after {retry} ms");

    // The admitted streams play on for a while, one of them unread.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let _ = stop.send(true);
    for listener in listeners {
        let arrivals = listener.await.expect("listener");
        assert!(
            arrivals.len() > 250,
            "only {} frames in 7 s",
            arrivals.len()
        );
        assert!(arrivals.iter().all(|a| a.checksum_ok));
        let late = late_frames(&arrivals, Duration::from_millis(60));
        assert!(late.is_empty(), "late frames at a 60 ms buffer: {late:?}");
    }
    let scrape = metrics.render();
    let misses = sample(
        &scrape,
        r#"tts_worker_deadline_misses_total{kind="playout"}"#,
    );
    assert_eq!(misses, 0.0, "frames the worker sent late");
    assert_eq!(
        sample(&scrape, r#"tts_worker_requests_total{outcome="refused"}"#),
        1.0
    );
    drop(stalled);
    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
