//! A request's stop switch: how the connection (a cancel, a disconnect, a
//! shutdown) or a full queue ends a request from outside its relay.

use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

use crate::protocol::ErrorCode;

/// Why a request is being stopped from outside its relay.
#[derive(Debug, Clone)]
pub(crate) enum StopReason {
    /// The client cancelled it: it ends with `end`, `cancelled: true`.
    Cancelled,
    /// The client's connection went away: nothing more is sent.
    Disconnected,
    /// It ends with this `error`.
    Failed(ErrorCode, String),
}

/// A request's stop switch, shared by the connection and the relay.
/// Stopping drops the request's frames still queued at the writer and ends
/// its relay with the first reason given.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stop {
    token: CancellationToken,
    reason: Arc<OnceLock<StopReason>>,
}

impl Stop {
    /// Stops the request for `reason`, unless it was stopped already.
    pub(crate) fn stop(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// The reason given, once stopped.
    pub(crate) fn reason(&self) -> Option<StopReason> {
        self.reason.get().cloned()
    }

    /// What a writer checks to drop this request's queued frames.
    pub(crate) fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Resolves once the request is stopped.
    pub(crate) async fn stopped(&self) {
        self.token.cancelled().await;
    }

    /// Whether it has been stopped.
    pub(crate) fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }
}
