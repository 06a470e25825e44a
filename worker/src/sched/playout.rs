//! A stream's playout clock: when each of its frames is due, and how far
//! its listener can have got.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::FRAME;

/// A stream's playout clock, shared by the scheduler and the task that
/// sends the stream's frames.
#[derive(Debug, Default)]
pub struct Playout {
    /// When the first frame was sent.
    anchor: OnceLock<Instant>,
    /// How far the clock has moved back because the reader held frames up
    /// (a listener cannot play what it has not received), µs.
    shift_us: AtomicU64,
    /// Frames sent.
    sent: AtomicU32,
}

impl Playout {
    /// Starts the clock: the first frame left at `at`.
    pub fn start(&self, at: Instant) {
        let _ = self.anchor.set(at);
    }

    /// When the first frame was sent, if it was.
    pub fn anchor(&self) -> Option<Instant> {
        self.anchor.get().copied()
    }

    /// When frame `k` is due; `None` before the first frame is sent.
    pub fn due(&self, k: u32) -> Option<Instant> {
        self.anchor().map(|a| a + self.shift() + FRAME * k)
    }

    /// The reader held frames up: the clock moves back by `by`.
    pub fn shift_by(&self, by: Duration) {
        self.shift_us
            .fetch_add(by.as_micros() as u64, Ordering::Relaxed);
    }

    fn shift(&self) -> Duration {
        Duration::from_micros(self.shift_us.load(Ordering::Relaxed))
    }

    /// Counts one more frame sent.
    pub fn sent_one(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Frames sent.
    pub fn sent(&self) -> u32 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Audio the listener can have played by `now`: the time since the
    /// first frame, but never more than what was sent.
    pub(super) fn position(&self, now: Instant) -> Option<(Duration, bool)> {
        let anchor = self.anchor()? + self.shift();
        let elapsed = now.saturating_duration_since(anchor);
        let sent = FRAME * self.sent();
        Some(if sent < elapsed {
            (sent, true)
        } else {
            (elapsed, false)
        })
    }
}
