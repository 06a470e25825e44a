//! A request's pacer: releases its frames on the stream's playout clock,
//! checks each as it leaves, and ends the request early when its reader
//! stalls, the worker shuts down or synthesis fails.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tracing::{debug, info, warn};
use tts_frame::{Tally, Validator};
use tts_protocol::Delivery;

use super::queue::{FailureSlot, FrameReceiver, Produced};
use super::{Failure, Sent, Shared, SynthPool};
use crate::audio::Frame;
use crate::metrics;
use crate::sched::{Playout, StreamId};

/// Sends one request's frames on its playout clock.
pub(super) struct Sender {
    pub(super) pool: Arc<SynthPool>,
    pub(super) id: StreamId,
    pub(super) delivery: Delivery,
    pub(super) playout: Arc<Playout>,
    pub(super) arrival: Instant,
    pub(super) _permit: OwnedSemaphorePermit,
    pub(super) tx: mpsc::Sender<Sent>,
    pub(super) abort: Option<tokio::sync::oneshot::Sender<Failure>>,
    /// The frames synthesised and not yet released.
    pub(super) frames: FrameReceiver,
    /// Why synthesis ended the request, ahead of any queued frame.
    pub(super) failure: FailureSlot,
}

/// Removes a stream from the scheduler when its sender ends, however it
/// ends: its queued work is dropped at once.
struct RemoveOnDrop(Arc<Shared>, StreamId);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if self.0.remove(self.1) {
            // Idle: give back what the last requests' peaks left behind.
            crate::alloc::trim();
        }
    }
}

impl Sender {
    /// Takes one frame at a time from the queue, holds it until its
    /// release time and room in the response stream, checks it and sends
    /// it; ends early on a failure, a stalled reader or a forced stop.
    pub(super) async fn run(mut self) {
        let _inflight = metrics::InflightGuard::new();
        let _remove = RemoveOnDrop(Arc::clone(&self.pool.shared), self.id);
        let mut held: Option<Produced> = None;
        let mut producing = true;
        let mut sent = 0u32;
        let mut blocked_since: Option<Instant> = None;
        let mut checks = Checks::default();
        while producing || held.is_some() {
            let now = Instant::now();
            let release = held
                .as_ref()
                .map(|p| self.release_at(p.frame.sequence, now));
            let releasable = release.is_some_and(|at| at <= now);
            if releasable && self.tx.capacity() == 0 {
                blocked_since.get_or_insert(now);
            }
            let stalled_at = blocked_since.map(|t| t + self.pool.config.stalled_after);
            tokio::select! {
                biased;
                _ = self.tx.closed() => {
                    debug!("receiver gone; synthesis stopped");
                    return;
                }
                _ = self.pool.force.cancelled() => {
                    end_early(&mut self.abort, Failure::ShuttingDown);
                    return;
                }
                _ = tokio::time::sleep_until(stalled_at.unwrap_or(now).into()), if stalled_at.is_some() => {
                    metrics::stalled();
                    end_early(&mut self.abort, Failure::Stalled(self.pool.config.stalled_after));
                    return;
                }
                e = self.failure.failed() => {
                    warn!(error = %e, "synthesis failed");
                    end_early(&mut self.abort, e);
                    return;
                }
                next = self.frames.recv(), if producing && held.is_none() => {
                    producing = next.is_some();
                    held = next;
                    if self.frames.holding() {
                        // There is room now for frames the stream held back.
                        self.pool.shared.unblock(self.id);
                    }
                }
                _ = tokio::time::sleep_until(release.unwrap_or(now).into()), if !releasable && release.is_some() => {}
                permit = self.tx.reserve(), if releasable => {
                    let Ok(permit) = permit else { return };
                    if let Some(since) = blocked_since.take() {
                        metrics::backpressure(since.elapsed());
                    }
                    if let Some(produced) = held.take() && self.send(&mut checks, produced, permit) {
                        sent += 1;
                    }
                }
            }
        }
        if sent == 0 {
            end_early(&mut self.abort, Failure::NoAudio);
        }
    }

    /// Accounts, checks and sends a frame (unless an injected fault drops
    /// it); returns whether it was sent.
    fn send(
        &self,
        checks: &mut Checks,
        produced: Produced,
        permit: mpsc::Permit<'_, Sent>,
    ) -> bool {
        let Produced { frame, at } = produced;
        metrics::frame_enqueued(self.tx.max_capacity() - self.tx.capacity());
        self.account(&frame, at, Instant::now());
        let faults = &self.pool.config.faults;
        let (corrupt, drop) = (
            faults.corrupts(frame.sequence),
            faults.drops(frame.sequence),
        );
        let frame = checks.check(corrupt, frame);
        if drop {
            // Lost after the worker's own checks: the permit goes back
            // unused and the next hop sees a gap.
            return false;
        }
        permit.send(Sent::Frame(frame));
        true
    }

    /// When frame `k` may leave: at once for the first frame, for fast
    /// delivery and while draining, else the send-ahead before its due
    /// time.
    fn release_at(&self, k: u32, now: Instant) -> Instant {
        if self.delivery == Delivery::Fast || self.pool.draining.load(Ordering::Relaxed) {
            return now;
        }
        match self.playout.due(k) {
            Some(due) => due.checked_sub(self.pool.config.send_ahead).unwrap_or(now),
            None => now,
        }
    }

    /// Starts the clock on the first frame; counts a frame sent after its
    /// due time as a deadline miss when its synthesis was late, and moves
    /// the clock back when the reader held it up.
    fn account(&self, frame: &Frame, produced_at: Instant, sent_at: Instant) {
        if frame.sequence == 0 {
            self.playout.start(sent_at);
            if sent_at > self.arrival + self.pool.config.policy.first_audio_budget {
                metrics::deadline_miss("first_audio");
            }
        } else if let Some(due) = self.playout.due(frame.sequence)
            && sent_at > due
        {
            if produced_at > due {
                metrics::deadline_miss("playout");
            }
            let held = sent_at.saturating_duration_since(produced_at.max(due));
            if held > Duration::from_millis(2) {
                self.playout.shift_by(held);
            }
        }
        self.playout.sent_one();
    }
}

/// Ends a request before its last frame, saying why through its abort
/// slot, which the response stream reads before any queued frame (the
/// frame queue may be full).
fn end_early(abort: &mut Option<tokio::sync::oneshot::Sender<Failure>>, why: Failure) {
    info!(reason = %why, "request ended early");
    if let Some(abort) = abort.take() {
        let _ = abort.send(why);
    }
}

/// The checks a stream's frames pass before they leave: the same
/// validation and quality monitor as at every other hop.
#[derive(Default)]
struct Checks {
    validator: Validator,
    tally: Tally,
}

impl Checks {
    /// Validates a frame (and, with `corrupt`, flips a payload byte after
    /// its checksum: an injected fault).
    fn check(&mut self, corrupt: bool, mut frame: Frame) -> Frame {
        let outcome = self
            .validator
            .check(frame.sequence, frame.crc32c, &frame.payload);
        let events = self.tally.record(&outcome);
        metrics::frame_validated(&outcome, events);
        for event in events.iter() {
            warn!(
                sequence = frame.sequence,
                event = event.as_str(),
                "audio quality event"
            );
        }
        if corrupt && let Some(byte) = frame.payload.get_mut(100) {
            *byte ^= 0x5A;
        }
        frame
    }
}
