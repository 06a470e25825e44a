//! The hand-off between a request's relay and its connection's writer: one
//! bounded queue per connection, in frames, which a relay waits on for
//! room. Waiting here is what holds the worker when the client is slow.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tts_frame::FrameHeader;

use crate::protocol::{ErrorCode, ServerMessage};
use crate::stop::{Stop, StopReason};

/// What the connection's writer sends, in order.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A verified frame; the writer stamps the orchestrator time.
    Frame {
        header: FrameHeader,
        payload: Bytes,
        samples: u32,
        /// When the orchestrator received it from the worker.
        received: Instant,
        /// Cancelled when the request is stopped: the writer drops the frame.
        cancelled: CancellationToken,
    },
    /// The request's `end`; the writer fills in what it actually sent.
    End {
        request_id: String,
        stream_id: u32,
        cancelled: bool,
    },
    /// The request's `error`, which ends it instead of `end`.
    Failed {
        stream_id: u32,
        error: ServerMessage,
    },
    /// `start`.
    Message(ServerMessage),
    /// Close the connection (after everything queued before it).
    Close(axum::extract::ws::CloseFrame),
}

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
    out: &mpsc::Sender<Outgoing>,
    item: Outgoing,
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
