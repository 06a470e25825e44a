//! The bounded hand-off of one request's frames from the synthesis
//! threads to its pacer, and the failure slot that bypasses it.
//!
//! A thread never waits on the queue: what fits goes in, the rest of the
//! step's frames stay with the job (its overflow), and the stream runs no
//! further step until its pacer has made room for them. The pacer takes
//! one frame at a time; when the thread side is holding frames back, each
//! frame it takes wakes the stream. A failure goes around the queue, so
//! the pacer hears of it at once even when the queue is full.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tts_frame::FRAME_MS;

use super::Failure;
use crate::audio::Frame;

/// A frame, and when its step produced it.
#[derive(Debug)]
pub(super) struct Produced {
    pub(super) frame: Frame,
    pub(super) at: Instant,
}

/// The thread side, carried by the job.
pub(super) struct FrameQueue {
    /// Frames for the pacer; `capacity` of them at most, in 20 ms frames.
    tx: mpsc::Sender<Produced>,
    /// A step's frames that did not fit; at most one step's worth, since a
    /// stream with any runs no step.
    overflow: VecDeque<Produced>,
    /// Whether `overflow` holds frames, for the pacer to see.
    holding: Arc<AtomicBool>,
    /// Why synthesis ended the request; one message at most.
    failure: Option<oneshot::Sender<Failure>>,
}

/// The pacer side: the frames.
pub(super) struct FrameReceiver {
    rx: mpsc::Receiver<Produced>,
    holding: Arc<AtomicBool>,
}

/// The pacer side: why synthesis ended the request, if it did.
pub(super) struct FailureSlot {
    /// `None` once the thread side has gone without a failure.
    failure: Option<oneshot::Receiver<Failure>>,
}

/// The queue's capacity for a stream whose frames may run `lookahead`
/// ahead of its playout clock and leave `send_ahead` before they are due:
/// that much audio in 20 ms frames (150 for 2 s + 1 s), and never fewer
/// than two (so that the pacer always has a frame to take, and a wake to
/// give, after a step that did not fit).
pub(super) fn capacity(lookahead: Duration, send_ahead: Duration) -> usize {
    let ms = lookahead.saturating_add(send_ahead).as_millis();
    usize::try_from(ms / u128::from(FRAME_MS))
        .unwrap_or(usize::MAX)
        .clamp(2, tokio::sync::Semaphore::MAX_PERMITS)
}

/// A queue of `capacity` frames.
pub(super) fn channel(capacity: usize) -> (FrameQueue, FrameReceiver, FailureSlot) {
    let (tx, rx) = mpsc::channel(capacity);
    let (failure_tx, failure_rx) = oneshot::channel();
    let holding = Arc::new(AtomicBool::new(false));
    (
        FrameQueue {
            tx,
            overflow: VecDeque::new(),
            holding: Arc::clone(&holding),
            failure: Some(failure_tx),
        },
        FrameReceiver { rx, holding },
        FailureSlot {
            failure: Some(failure_rx),
        },
    )
}

impl FrameQueue {
    /// Queues a step's frames, produced `at`: those that fit go to the
    /// pacer, in order, the rest are held back. Frames for a pacer that
    /// has gone are dropped.
    pub(super) fn push(&mut self, frames: impl IntoIterator<Item = Frame>, at: Instant) {
        self.overflow
            .extend(frames.into_iter().map(|frame| Produced { frame, at }));
        self.flush();
    }

    /// Moves held-back frames to the pacer while they fit; returns whether
    /// none is left.
    pub(super) fn flush(&mut self) -> bool {
        while let Some(next) = self.overflow.pop_front() {
            match self.tx.try_send(next) {
                Ok(()) => {}
                Err(TrySendError::Full(next)) => {
                    self.overflow.push_front(next);
                    break;
                }
                Err(TrySendError::Closed(_)) => self.overflow.clear(),
            }
        }
        let empty = self.overflow.is_empty();
        self.holding.store(!empty, Ordering::Release);
        empty
    }

    /// Synthesis failed: the pacer hears of it ahead of any queued frame.
    pub(super) fn fail(&mut self, why: Failure) {
        if let Some(failure) = self.failure.take() {
            let _ = failure.send(why);
        }
    }
}

impl FrameReceiver {
    /// The next frame; `None` once the last has been taken.
    pub(super) async fn recv(&mut self) -> Option<Produced> {
        self.rx.recv().await
    }

    /// Whether the thread side is holding frames back (it needs a wake
    /// once there is room).
    pub(super) fn holding(&self) -> bool {
        self.holding.load(Ordering::Acquire)
    }
}

impl FailureSlot {
    /// Resolves with the failure, if synthesis fails; never resolves once
    /// the thread side has gone without one.
    pub(super) async fn failed(&mut self) -> Failure {
        if let Some(failure) = self.failure.as_mut() {
            match failure.await {
                Ok(why) => return why,
                Err(_) => self.failure = None,
            }
        }
        std::future::pending().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::Framer;

    fn frames(n: usize) -> Vec<Frame> {
        let mut framer = Framer::default();
        let mut out = Vec::new();
        framer.push((0..n * 960 + 1).map(|i| i as i16), &mut out);
        out
    }

    #[test]
    fn capacity_is_the_lookahead_and_send_ahead_in_frames() {
        let s = Duration::from_secs;
        assert_eq!(capacity(s(2), s(1)), 150);
        assert_eq!(capacity(Duration::ZERO, Duration::ZERO), 2);
        assert_eq!(
            capacity(Duration::MAX, s(1)),
            tokio::sync::Semaphore::MAX_PERMITS
        );
    }

    #[tokio::test]
    async fn frames_that_do_not_fit_are_held_back_in_order_until_there_is_room() {
        let (mut queue, mut rx, _) = channel(3);
        queue.push(frames(5), Instant::now());
        assert!(rx.holding());
        assert_eq!(rx.recv().await.map(|p| p.frame.sequence), Some(0));
        assert!(!queue.flush(), "one of two fits");
        for _ in 0..2 {
            rx.recv().await;
        }
        assert!(queue.flush());
        assert!(!rx.holding());
        drop(queue);
        let mut rest = Vec::new();
        while let Some(p) = rx.recv().await {
            rest.push(p.frame.sequence);
        }
        assert_eq!(rest, [3, 4]);
    }

    #[tokio::test]
    async fn a_failure_overtakes_a_full_queue() {
        let (mut queue, _rx, mut failed) = channel(2);
        queue.push(frames(4), Instant::now());
        queue.fail(Failure::NoAudio);
        let why = tokio::time::timeout(Duration::from_secs(1), failed.failed())
            .await
            .expect("failure seen at once");
        assert!(matches!(why, Failure::NoAudio));
        // Without a failure, the slot never resolves.
        let (queue, _rx, mut failed) = channel(2);
        drop(queue);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), failed.failed())
                .await
                .is_err()
        );
    }
}
