//! The hand-off between a request's relay and whoever sends its audio on
//! (a connection's writer, an HTTP response body, a context): one bounded
//! queue, in frames, which a relay waits on for room. Waiting here is what
//! holds the worker when the client is slow.
//!
//! The queue keeps the process's frame counts: a frame counts as buffered
//! from the moment it is offered until it is taken out (or found undelivered
//! when the receiving side goes away), whichever side it ends on.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::frame::Item;
use crate::metrics::RelayStats;
use crate::protocol::ErrorCode;
use crate::stop::{Stop, StopReason};

/// A bounded queue of `capacity` items (frames, mostly): its sending side
/// (cloned by every relay that feeds it) and its receiving side.
pub(crate) fn frame_queue(capacity: usize, stats: Arc<RelayStats>) -> (FrameQueue, FrameReceiver) {
    let (tx, rx) = mpsc::channel(capacity);
    let queue = FrameQueue {
        tx,
        stats: Arc::clone(&stats),
    };
    (queue, FrameReceiver { rx, stats })
}

/// What became of an item offered to a queue.
pub(crate) enum Queued {
    /// Queued; `waited` when the queue was full at first.
    Sent { waited: bool },
    /// The request was stopped meanwhile.
    Stopped,
    /// No room for `stalled`: the client is not reading. The request is
    /// stopped with `client_too_slow` (the writer drops what it queued).
    Stalled,
    /// The receiving side is gone.
    Gone,
}

/// The sending side of a queue.
#[derive(Debug, Clone)]
pub(crate) struct FrameQueue {
    tx: mpsc::Sender<Item>,
    stats: Arc<RelayStats>,
}

impl FrameQueue {
    /// Offers `item`: waits for room, but not past the request's stop nor
    /// longer than `stalled`. Every item of a request goes through here,
    /// so a client that reads nothing holds a request for at most
    /// `stalled`.
    pub(crate) async fn send(&self, item: Item, stop: &Stop, stalled: Duration) -> Queued {
        if stop.is_stopped() {
            return Queued::Stopped;
        }
        let frame = matches!(item, Item::Frame(_));
        if frame {
            self.stats
                .frame_enqueued(self.tx.max_capacity() - self.tx.capacity());
        }
        let queued = self.offer(item, stop, stalled).await;
        if frame && !matches!(queued, Queued::Sent { .. }) {
            self.stats.frame_dequeued();
        }
        queued
    }

    async fn offer(&self, item: Item, stop: &Stop, stalled: Duration) -> Queued {
        // Room at once (the usual case): no timer to arm for this item.
        let item = match self.tx.try_send(item) {
            Ok(()) => return Queued::Sent { waited: false },
            Err(TrySendError::Closed(_)) => return Queued::Gone,
            Err(TrySendError::Full(item)) => item,
        };
        tokio::select! {
            biased;
            _ = stop.stopped() => Queued::Stopped,
            _ = tokio::time::sleep(stalled) => {
                stop.stop(StopReason::Failed(ErrorCode::ClientTooSlow, String::new()));
                Queued::Stalled
            }
            sent = self.tx.send(item) => match sent {
                Ok(()) => Queued::Sent { waited: true },
                Err(_) => Queued::Gone,
            },
        }
    }

    /// Offers a request's last item (`end` or `error`, never a frame),
    /// waiting at most `limit`; whether it was queued.
    pub(crate) async fn send_last(&self, item: Item, limit: Duration) -> bool {
        debug_assert!(!matches!(item, Item::Frame(_)));
        tokio::time::timeout(limit, self.tx.send(item))
            .await
            .is_ok()
    }
}

/// The receiving side of a queue. Frames still in it when it is dropped
/// leave the count.
#[derive(Debug)]
pub(crate) struct FrameReceiver {
    rx: mpsc::Receiver<Item>,
    stats: Arc<RelayStats>,
}

impl FrameReceiver {
    /// The next item; `None` once every sender is gone and it is empty.
    pub(crate) async fn recv(&mut self) -> Option<Item> {
        let item = self.rx.recv().await;
        if matches!(item, Some(Item::Frame(_))) {
            self.stats.frame_dequeued();
        }
        item
    }

    /// Takes no more items and drops what is queued; returns how many
    /// frames were dropped.
    pub(crate) fn close(&mut self) -> u64 {
        self.rx.close();
        let mut dropped = 0;
        while let Ok(item) = self.rx.try_recv() {
            if matches!(item, Item::Frame(_)) {
                self.stats.frame_dequeued();
                dropped += 1;
            }
        }
        dropped
    }
}

impl Drop for FrameReceiver {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::frame::Frame;

    fn frame() -> Item {
        Item::Frame(Frame {
            header: tts_frame::FrameHeader::default(),
            payload: bytes::Bytes::new(),
            samples: 0,
            received: Instant::now(),
            cancelled: CancellationToken::new(),
        })
    }

    fn buffered(stats: &RelayStats) -> u64 {
        stats.frames_buffered.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn frames_count_as_buffered_until_taken_or_dropped_with_the_receiver() {
        let stats = Arc::new(RelayStats::default());
        let (queue, mut rx) = frame_queue(4, Arc::clone(&stats));
        let (stop, wait) = (Stop::default(), Duration::from_secs(1));
        for _ in 0..3 {
            let queued = queue.send(frame(), &stop, wait).await;
            assert!(matches!(queued, Queued::Sent { waited: false }));
        }
        let end = Item::End {
            request_id: "r".into(),
            stream_id: 1,
            cancelled: false,
        };
        assert!(queue.send_last(end, wait).await);
        assert_eq!(buffered(&stats), 3, "only frames count");
        assert!(matches!(rx.recv().await, Some(Item::Frame(_))));
        assert_eq!(buffered(&stats), 2);
        drop(rx);
        assert_eq!(buffered(&stats), 0, "what was never taken leaves the count");
        assert!(matches!(
            queue.send(frame(), &stop, wait).await,
            Queued::Gone
        ));
        assert_eq!(buffered(&stats), 0);
        assert_eq!(stats.frames_buffered_high_water.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_full_queue_stalls_the_request_after_its_limit() {
        let stats = Arc::new(RelayStats::default());
        let (queue, _rx) = frame_queue(1, Arc::clone(&stats));
        let stop = Stop::default();
        let wait = Duration::from_millis(20);
        assert!(matches!(
            queue.send(frame(), &stop, wait).await,
            Queued::Sent { .. }
        ));
        assert!(matches!(
            queue.send(frame(), &stop, wait).await,
            Queued::Stalled
        ));
        assert!(stop.is_stopped(), "stalled stops the request");
        assert_eq!(buffered(&stats), 1);
        assert!(matches!(
            queue.send(frame(), &stop, wait).await,
            Queued::Stopped
        ));
    }
}
