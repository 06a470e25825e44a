//! With a voice whose every step costs a fixed time (so capacity is the same
//! on any machine), the worker admits as many streams as its threads keep in
//! real time, refuses the next one at once with `overloaded` and a retry
//! hint (and reads that connection's next message, and once the address
//! storms its new connections' and HTTP requests, only once the hint's
//! time is over), and the admitted streams play without a late frame,
//! while one of their clients stops reading.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tts_client::{Client, ErrorCode, Event, ServerMessage, SynthesizeOptions};
use tts_frame::{checksum, decode_frame};
use tts_loadtest::record::{Arrival, late_frames};
use tts_orchestrator::OrchestratorConfig;
use tts_tests::{
    eventually, http_post, sample, spawn_orchestrator_metered, spawn_worker, worker_config,
};
use tts_worker::engine::FixedCost;

/// 0.3 s of compute per second of audio: two threads at 80 % (1.6 threads)
/// keep five streams (1.5) in real time, not six (1.8).
const COST: FixedCost = FixedCost {
    step_audio: Duration::from_millis(500),
    step_time: Duration::from_millis(150),
    audio_per_char: Duration::from_millis(50),
    marginal: Duration::ZERO,
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
/// message that refused it, with how long that took and the connection.
async fn open(url: &str, text: &str) -> Result<Stream, (ServerMessage, Duration, Client)> {
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
            Event::Message(m @ ServerMessage::Error { .. }) => {
                return Err((m, sent.elapsed(), stream.client));
            }
            event => stream.record(event),
        }
    }
    Ok(stream)
}

/// The retry hint of an `overloaded` error.
fn overloaded(error: &ServerMessage) -> u64 {
    match error {
        ServerMessage::Error {
            code: ErrorCode::Overloaded,
            retry_after_ms: Some(ms),
            ..
        } => *ms,
        other => panic!("expected overloaded with a retry hint, got {other:?}"),
    }
}

/// Whether an answer at `at` came no sooner than a refusal at `since`,
/// which said to wait `retry_ms`, allowed (at most a second; 20 ms for
/// the timers' grain).
fn held(since: Instant, retry_ms: u64, at: Instant) -> bool {
    let hold = Duration::from_millis(retry_ms.min(1_000));
    at.duration_since(since) + Duration::from_millis(20) >= hold
}

/// The next `error` message on `client`.
async fn next_error(client: &mut Client) -> ServerMessage {
    loop {
        if let Event::Message(m @ ServerMessage::Error { .. }) =
            client.next_event().await.expect("an answer")
        {
            return m;
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
    let (error, took, mut refused) = refusal;
    let refused_at = Instant::now();
    let retry = overloaded(&error);
    assert!(retry > 0);
    eprintln!("refused after {took:?}, retry after {retry} ms");

    // The refused client retries at once on the same connection: its
    // next message is read only once the time it was told to wait is
    // over (at most a second), and is refused again.
    refused
        .start(&text, &SynthesizeOptions::default())
        .await
        .expect("send");
    let again = next_error(&mut refused).await;
    let again_at = Instant::now();
    assert!(
        held(refused_at, retry, again_at),
        "answered {:?} after the refusal that said to wait {retry} ms",
        again_at - refused_at
    );
    drop(refused);

    // It reconnects to ask again at once, again and again: the first
    // reconnections are answered at once (other clients of the same
    // address are not held for one refusal), but within a few the address
    // is storming and its new connections wait as long as the last
    // refusal said.
    let mut refusals = 2;
    let mut last = (again_at, overloaded(&again));
    let storm_ends = Instant::now() + Duration::from_secs(5);
    let mut attempt = 0;
    let first_held = loop {
        assert!(
            Instant::now() < storm_ends,
            "{attempt} reconnections at once in 5 s were never held"
        );
        let mut reconnected = Client::connect(&pipeline.ws_url).await.expect("connect");
        reconnected
            .start(&text, &SynthesizeOptions::default())
            .await
            .expect("send");
        let answer = next_error(&mut reconnected).await;
        let at = Instant::now();
        refusals += 1;
        let was_held = held(last.0, last.1, at);
        last = (at, overloaded(&answer));
        if was_held {
            break attempt;
        }
        attempt += 1;
    };
    assert!(first_held > 0, "the first reconnection was held");

    // And over HTTP, which has a connection per request.
    let body = format!(r#"{{"model":"tts-1","input":"{text}","voice":"alloy"}}"#);
    let answer = http_post(pipeline.orchestrator.addr, "/v1/audio/speech", &body, &[]).await;
    let answered = Instant::now();
    assert_eq!(answer.status, 503, "{}", answer.headers);
    let headers = answer.headers.to_ascii_lowercase();
    assert!(
        headers.contains("retry-after:") && headers.contains("retry-after-ms:"),
        "{headers}"
    );
    assert!(
        held(last.0, last.1, answered),
        "an HTTP request answered {:?} after the refusal that said to wait {} ms",
        answered - last.0,
        last.1
    );

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
        f64::from(refusals + 1),
        "each refusal, the HTTP one included"
    );
    drop(stalled);
    pipeline.orchestrator.stop().await;
    worker.stop().await;
}
