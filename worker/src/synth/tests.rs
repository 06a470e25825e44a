use tokio::sync::{mpsc, oneshot};
use tts_protocol::Delivery;

use super::*;
use crate::engine::{ClauseState, FixedCost, FixedCostVoice, Synthesizer, VoiceInfo};
use crate::request::{RequestIds, Speech, SpeechRequest};
use crate::text::Clause;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn fixed(step_audio_ms: u64, audio_per_char_ms: u64) -> FixedCostVoice {
    FixedCostVoice::new(
        "fixed",
        FixedCost {
            step_audio: ms(step_audio_ms),
            step_time: ms(1),
            audio_per_char: ms(audio_per_char_ms),
            marginal: Duration::ZERO,
        },
    )
}

fn start(voice: Arc<dyn Voice>, policy: Policy) -> Arc<SynthPool> {
    start_pool(voice, policy, 4)
}

/// A pool of `voice` with `policy`, admitting at most `max_requests`.
pub(super) fn start_pool(
    voice: Arc<dyn Voice>,
    policy: Policy,
    max_requests: usize,
) -> Arc<SynthPool> {
    SynthPool::start(
        &[voice],
        PoolConfig {
            policy,
            max_requests,
            send_ahead: policy.send_ahead,
            stalled_after: Duration::from_secs(10),
            max_audio_secs: 60.0,
            faults: Faults::disabled(&[tts_telemetry::faults::Component::Worker]),
            stalled_thread_after: Duration::from_secs(5),
        },
    )
    .expect("pool")
}

/// Submits `chars` characters of text; the response stream holds
/// `stream_frames` frames.
fn submit(
    pool: &Arc<SynthPool>,
    chars: usize,
    delivery: Delivery,
    stream_frames: usize,
) -> (mpsc::Receiver<Sent>, oneshot::Receiver<Failure>) {
    let (frames, rx) = mpsc::channel(stream_frames);
    let (abort, abort_rx) = oneshot::channel();
    let clause = Clause {
        text: "x".repeat(chars),
        ..Clause::default()
    };
    let request = SpeechRequest {
        ids: RequestIds::default(),
        voice: 0,
        speech: Speech::default(),
        delivery,
    };
    pool.submit(request, vec![clause], Output { frames, abort })
        .expect("admitted");
    (rx, abort_rx)
}

/// Every frame of a request, until its stream ends.
async fn frames(rx: &mut mpsc::Receiver<Sent>) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(sent) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("frames keep coming")
    {
        match sent {
            Sent::Frame(f) => frames.push(f),
            Sent::Failed(why) => panic!("failed after {} frames: {why}", frames.len()),
        }
    }
    frames
}

/// Frames are whole, in order, and only the last is marked last.
fn assert_complete(frames: &[Frame], expected: usize) {
    assert_eq!(frames.len(), expected);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.sequence as usize, i, "frame {i} out of order");
        assert_eq!(f.last, i + 1 == expected, "frame {i}: last = {}", f.last);
    }
}

#[test]
fn closing_the_pool_ends_its_threads() {
    let pool = start(Arc::new(fixed(100, 50)), Policy::default());
    let threads = |p: &SynthPool| {
        p.threads
            .lock()
            .map(|t| t.iter().filter(|t| !t.is_finished()).count())
            .unwrap_or(0)
    };
    assert_eq!(threads(&pool), 2, "both threads wait for work");
    assert!(pool.close(Duration::from_secs(5)), "threads ended in time");
    assert_eq!(threads(&pool), 0);
    assert!(pool.close(Duration::ZERO), "closing again is harmless");
}

#[tokio::test]
async fn a_reader_that_takes_nothing_holds_at_most_the_queue_and_one_step() {
    // Steps of 4 s (200 frames) against a 150-frame queue (2 s lookahead
    // + 1 s send-ahead); 30 s of text.
    let pool = start(
        Arc::new(fixed(4_000, 100)),
        Policy {
            admission: false,
            ..Policy::default()
        },
    );
    let cap = queue::capacity(Policy::default().lookahead, Policy::default().send_ahead);
    assert_eq!(cap, 150);
    // Nothing is parked while draining: only the queue holds the stream
    // back.
    pool.drain();
    let (mut rx, _abort) = submit(&pool, 300, Delivery::Fast, 4);
    let produced = |p: &SynthPool| p.shared.lock().streams.produced(1).unwrap_or(0);
    for _ in 0..100 {
        if produced(&pool) > 0 {
            break;
        }
        tokio::time::sleep(ms(20)).await;
    }
    // Time for the pacer to fill the response stream and make room.
    tokio::time::sleep(ms(200)).await;
    let held = produced(&pool);
    // 199 whole frames: the framer keeps a sample back for the next step.
    assert_eq!(held, 199, "one step ran, the next waits for room");
    assert!(held as usize <= cap + 200 + 4 + 1);
    // Nothing more happens while nobody reads.
    tokio::time::sleep(ms(300)).await;
    assert_eq!(produced(&pool), held, "still waiting");
    // Once read, every frame arrives.
    assert_complete(&frames(&mut rx).await, 1_500);
}

/// A fixed-cost voice whose second step of a clause fails.
struct FailsMidClause(FixedCostVoice);

struct FailingSynthesizer(Box<dyn Synthesizer>);

impl Voice for FailsMidClause {
    fn info(&self) -> &VoiceInfo {
        self.0.info()
    }

    fn synthesizer(&self) -> Result<Box<dyn Synthesizer>, EngineError> {
        Ok(Box::new(FailingSynthesizer(self.0.synthesizer()?)))
    }
}

impl Synthesizer for FailingSynthesizer {
    fn step(
        &mut self,
        speech: &Speech,
        state: &mut ClauseState,
        wide: bool,
        emit: &mut dyn FnMut(&[f32]),
    ) -> Result<(), EngineError> {
        if matches!(state, ClauseState::Counted { .. }) {
            return Err(EngineError::Runtime("the second step fails".into()));
        }
        self.0.step(speech, state, wide, emit)
    }
}

#[tokio::test]
async fn a_failure_reaches_the_pacer_while_its_queue_is_full() {
    // The first step (155 frames) fills the queue (150), the pacer's hand
    // (1) and the response stream (4), which nobody reads: the stream runs
    // again only once the last held-back frame is in, the queue full. The
    // second step fails (the warm-up phrase, 2.9 s, takes one step).
    let pool = start(
        Arc::new(FailsMidClause(fixed(3_101, 40))),
        Policy {
            admission: false,
            ..Policy::default()
        },
    );
    pool.drain();
    let (mut rx, abort) = submit(&pool, 150, Delivery::Fast, 4);
    let why = tokio::time::timeout(Duration::from_secs(2), abort)
        .await
        .expect("the failure arrives at once")
        .expect("a failure");
    assert!(matches!(why, Failure::Engine(_)), "{why}");
    let mut taken = 0;
    while let Some(Sent::Frame(_)) = rx.recv().await {
        taken += 1;
    }
    assert_eq!(taken, 4, "only the frames already released");
}

#[tokio::test]
async fn fast_and_real_time_streams_give_the_same_frames_through_a_small_queue() {
    // A two-frame queue against 5-frame steps: every step holds frames
    // back and waits for the pacer.
    let policy = Policy {
        admission: false,
        lookahead: ms(20),
        send_ahead: ms(20),
        ..Policy::default()
    };
    assert_eq!(queue::capacity(policy.lookahead, policy.send_ahead), 2);
    let pool = start(Arc::new(fixed(100, 10)), policy);
    let mut out = Vec::new();
    for delivery in [Delivery::Fast, Delivery::Realtime] {
        let (mut rx, _abort) = submit(&pool, 80, delivery, 16);
        let got = frames(&mut rx).await;
        assert_complete(&got, 40);
        out.push(got);
    }
    for (fast, real_time) in out[0].iter().zip(&out[1]) {
        assert_eq!(
            fast.payload, real_time.payload,
            "frame {} differs",
            fast.sequence
        );
    }
}
