//! Eight connections at once all complete with valid audio, and they are
//! served at the same time: a listener to each would hear all eight at
//! once, every one's first audio coming before any one's audio is over.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Barrier;
use tts_client::{Client, ClientError, ErrorCode, SynthesizeOptions, Utterance};
use tts_tests::{assert_speech_like, spawn_pipeline};

const TEXTS: [&str; 8] = [
    "One small step for a man, one giant leap for mankind.",
    "The rain in Spain stays mainly in the plain.",
    "To be or not to be, that is the question.",
    "All that glitters is not gold.",
    "A journey of a thousand miles begins with a single step.",
    "Knowledge is power, and power is responsibility.",
    "The early bird catches the worm, but the second mouse gets the cheese.",
    "Time flies like an arrow, and fruit flies like a banana.",
];

/// When one request was sent, its first audio arrived, its last frame
/// arrived, and its audio, played from its first frame, was over.
#[derive(Debug, Clone, Copy)]
struct Span {
    sent: Instant,
    first: Instant,
    end: Instant,
    played: Instant,
    /// Times it was refused (`overloaded`) before it was admitted.
    refusals: u32,
}

/// Back-off after a refusal.
const BACK_OFF: Duration = Duration::from_millis(100);
/// The longest a request is sent again after refusals.
const ADMITTED_WITHIN: Duration = Duration::from_secs(30);

/// Speaks `text`, sending it again after a refusal (`overloaded`: all
/// eight arrive at one instant, and the worker admits a burst of new
/// streams a few at a time); returns the utterance, when the admitted
/// attempt was sent, and the refusals before it.
async fn speak_admitted(
    client: &mut Client,
    text: &str,
    opts: &SynthesizeOptions,
) -> (Utterance, Instant, u32) {
    let deadline = Instant::now() + ADMITTED_WITHIN;
    let mut refusals = 0;
    loop {
        let attempt = Instant::now();
        match client.synthesize(text, opts).await {
            Ok(u) => return (u, attempt, refusals),
            Err(ClientError::Server { code, .. })
                if code == ErrorCode::Overloaded && attempt < deadline =>
            {
                refusals += 1;
                tokio::time::sleep(BACK_OFF).await;
            }
            Err(e) => panic!("synthesize: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_connections_complete_concurrently() {
    let (worker, pipeline) = spawn_pipeline().await;
    // Every client is connected before any request is sent.
    let connected = Arc::new(Barrier::new(TEXTS.len()));
    let mut tasks = Vec::new();
    for (i, text) in TEXTS.iter().enumerate() {
        let url = pipeline.ws_url.clone();
        let connected = Arc::clone(&connected);
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&url).await.expect("connect");
            let opts = SynthesizeOptions {
                request_id: Some(format!("req-{i}")),
                ..SynthesizeOptions::default()
            };
            connected.wait().await;
            let sent = Instant::now();
            let (u, admitted, refusals) = speak_admitted(&mut client, text, &opts).await;
            let first = admitted + Duration::from_secs_f64(u.report.time_to_first_audio_ms / 1e3);
            let span = Span {
                sent,
                first,
                end: admitted + Duration::from_secs_f64(u.report.wall_seconds),
                played: first + Duration::from_secs_f64(u.report.audio_seconds),
                refusals,
            };
            (i, text.split_whitespace().count(), u, span)
        }));
    }
    let mut sessions = std::collections::HashSet::new();
    let mut spans = Vec::new();
    for task in tasks {
        let (i, words, u, span) = task.await.expect("task");
        assert_eq!(u.report.request_id, format!("req-{i}"));
        assert_eq!(u.report.integrity_failures(), 0, "request {i}");
        assert_eq!(u.report.frames, u.report.end_frames, "request {i}");
        assert!(u.report.last_flag_seen);
        assert_speech_like(&u.samples, words);
        sessions.insert(u.report.trace_id.clone());
        spans.push(span);
    }
    assert_eq!(sessions.len(), 8, "each request has its own trace id");
    assert_streamed_at_once(&spans);
    assert_eq!(
        pipeline
            .stats
            .frames_received
            .load(std::sync::atomic::Ordering::Relaxed),
        pipeline
            .stats
            .frames_sent
            .load(std::sync::atomic::Ordering::Relaxed),
        "every frame received from the worker was sent"
    );

    pipeline.orchestrator.stop().await;
    worker.stop().await;
}

/// The last first audio came before the first utterance was over (played
/// in real time from its first frame): at that moment all eight were
/// being heard. Served one after another, a later request's first audio
/// would come after an earlier one's last frame, seconds later. (The last
/// frame itself may come up to the send-ahead, a second, before the audio
/// is over.)
fn assert_streamed_at_once(spans: &[Span]) {
    let last_first = spans.iter().map(|s| s.first).max().expect("spans");
    let first_over = spans.iter().map(|s| s.played).min().expect("spans");
    let origin = spans.iter().map(|s| s.sent).min().expect("spans");
    let ms = |t: Instant| t.duration_since(origin).as_millis();
    let intervals: Vec<String> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "req-{i}: sent {} ms ({} refusals), first audio {} ms, last frame {} ms, \
                 audio over {} ms",
                ms(s.sent),
                s.refusals,
                ms(s.first),
                ms(s.end),
                ms(s.played)
            )
        })
        .collect();
    eprintln!("{}", intervals.join("\n"));
    assert!(
        last_first < first_over,
        "not all eight were heard at once: the last first audio came at {} ms, after the \
         first utterance was over at {} ms\n{}",
        ms(last_first),
        ms(first_over),
        intervals.join("\n")
    );
}
