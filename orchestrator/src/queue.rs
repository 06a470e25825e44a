//! The hand-off between a request's relay and its connection's writer: one
//! bounded queue per connection, in frames, which a relay waits on for
//! room. Waiting here is what holds the worker when the client is slow.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::frame::Item;
use crate::protocol::ErrorCode;
use crate::stop::{Stop, StopReason};

/// What became of an item offered to a connection's queue.
pub(crate) enum Queued {
    /// Queued; `waited` when the queue was full at first.
    Sent { waited: bool },
    /// The request was stopped meanwhile.
    Stopped,
    /// No room for `stalled`: the client is not reading. The request is
    /// stopped with `client_too_slow` (the writer drops what it queued).
    Stalled,
    /// The connection is gone.
    Gone,
}

/// Offers `item` to the connection's bounded queue: waits for room, but
/// not past the request's stop nor longer than `stalled`. Every item of a
/// request goes through here, so a client that reads nothing holds a
/// request for at most `stalled`.
pub(crate) async fn enqueue(
    out: &mpsc::Sender<Item>,
    item: Item,
    stop: &Stop,
    stalled: Duration,
) -> Queued {
    if stop.is_stopped() {
        return Queued::Stopped;
    }
    // Room at once (the usual case): no timer to arm for this item.
    let item = match out.try_send(item) {
        Ok(()) => return Queued::Sent { waited: false },
        Err(mpsc::error::TrySendError::Closed(_)) => return Queued::Gone,
        Err(mpsc::error::TrySendError::Full(item)) => item,
    };
    tokio::select! {
        biased;
        _ = stop.stopped() => Queued::Stopped,
        _ = tokio::time::sleep(stalled) => {
            stop.stop(StopReason::Failed(ErrorCode::ClientTooSlow, String::new()));
            Queued::Stalled
        }
        sent = out.send(item) => match sent {
            Ok(()) => Queued::Sent { waited: true },
            Err(_) => Queued::Gone,
        },
    }
}
