//! With a voice whose every step costs a fixed time (so capacity is the same
//! on any machine), the worker admits as many streams as its threads keep in
//! real time, refuses the next one at once with `overloaded` and a retry
//! hint, and the admitted streams play without a late frame, while one of
//! their clients stops reading.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tts_client::{Client, ErrorCode, Event, ServerMessage, SynthesizeOptions};
use tts_frame::{checksum, decode_frame};
use tts_loadtest::record::{Arrival, late_frames};
use tts_orchestrator::OrchestratorConfig;
use tts_tests::{eventually, sample, spawn_orchestrator_metered, spawn_worker, worker_config};
use tts_worker::engine::FixedCost;

/// 0.3 s of compute per second of audio: two threads at 80 % (1.6 threads)
/// keep five streams (1.5) in real time, not six (1.8).
const COST: FixedCost = FixedCost {
    step_audio: Duration::from_millis(500),
    step_time: Duration::from_millis(150),
    audio_per_char: Duration::from_millis(50),
};
const FIT: usize = 5;

/// Frames a stream's first second brings: the worker sends this far
/// ahead of the playout clock.
const SEND_AHEAD_FRAMES: usize = 50;
/// Frames each listener takes before the streams are judged: six seconds
/// of audio.
const PLAYED_FRAMES: usize = 300;

/// A stream being listened to: its client, when its request was sent, and
/// the arrivals so far.
struct Stream {
    client: Client,
    sent: Instant,
    arrivals: Vec<Arrival>,
}

impl Stream {
    /// Records `event` if it is a frame.
    fn record(&mut self, event: Event) {
        if let Event::Frame(bytes, at) = event {
            let (header, payload) = decode_frame(&bytes).expect("a well-formed frame");
            self.arrivals.push(Arrival {
                sequence: header.sequence,
                at: at.duration_since(self.sent),
                worker_to_orchestrator_us: 0,
                orchestrator_to_client_us: 0,
                checksum_ok: checksum(payload) == header.crc32c,
            });
        }
    }
}

/// Reads one stream's frames until told to stop, counting them in
/// `frames`; returns their arrivals.
async fn listen(
    mut stream: Stream,
    frames: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
) -> Vec<Arrival> {
    loop {
        let event = tokio::select! {
            _ = stop.changed() => return stream.arrivals,
            e = stream.client.next_event() => e.expect("the stream continues"),
        };
        stream.record(event);
        frames.store(stream.arrivals.len(), Ordering::Relaxed);
    }
}

/// Starts a long request; returns the stream once its first second of
/// audio is in (the stream is then ahead of its clock), or the `error`
/// message that refused it.
async fn open(url: &str, text: &str) -> Result<Stream, (ServerMessage, Duration)> {
    let mut client = Client::connect(url).await.expect("connect");
    let sent = Instant::now();
    client
        .start(text, &SynthesizeOptions::default())
        .await
        .expect("send");
    let mut stream = Stream {
        client,
        sent,
        arrivals: Vec::new(),
    };
    while stream.arrivals.len() < SEND_AHEAD_FRAMES {
        match stream.client.next_event().await.expect("an answer") {
            Event::Message(m @ ServerMessage::Error { .. }) => return Err((m, sent.elapsed())),
            event => stream.record(event),
        }
    }
    Ok(stream)
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
    let mut counts = Vec::new();
    let mut stalled = None;
    let refusal = loop {
        match open(&pipeline.ws_url, &text).await {
            Ok(stream) => {
                assert!(
                    listeners.len() < FIT + 1,
                    "more than {FIT} streams admitted"
                );
                if stalled.is_none() && listeners.len() == 1 {
                    // This client never reads again.
                    stalled = Some(stream.client);
                } else {
                    let frames = Arc::new(AtomicUsize::new(0));
                    counts.push(Arc::clone(&frames));
                    listeners.push(tokio::spawn(listen(stream, frames, stopped.clone())));
                }
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
    let played = eventually(Duration::from_secs(15), || {
        let done = counts
            .iter()
            .all(|c| c.load(Ordering::Relaxed) >= PLAYED_FRAMES);
        async move { done }
    })
    .await;
    let heard: Vec<usize> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    assert!(
        played,
        "frames heard by each listener after 15 s: {heard:?}, wanted {PLAYED_FRAMES}"
    );
    let _ = stop.send(true);
    for listener in listeners {
        let arrivals = listener.await.expect("listener");
        assert!(
            arrivals.len() > 250,
            "only {} frames while the streams played",
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
