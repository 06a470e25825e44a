//! Reconnecting when the orchestrator refuses a connection, or drops it
//! before any audio has come (a restart, a rolling update): the request
//! is sent again on a new connection after a backoff. Once audio has
//! started, a drop is the request's failure: what was heard cannot be
//! taken back.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio_tungstenite::tungstenite;
use tts_protocol::ErrorCode;

use crate::ClientError;

/// How often and how patiently to reconnect.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reconnect {
    /// Attempts after the first; 0 never reconnects.
    pub retries: usize,
    /// The first wait; each next one doubles, up to `longest`, and each
    /// gets a random jitter of up to itself again.
    pub first: Duration,
    /// The longest wait.
    pub longest: Duration,
}

impl Default for Reconnect {
    /// Six retries, 250 ms doubling to 4 s: 12 to 24 s in all, longer
    /// than an orchestrator takes to restart.
    fn default() -> Self {
        Self {
            retries: 6,
            first: Duration::from_millis(250),
            longest: Duration::from_secs(4),
        }
    }
}

impl Reconnect {
    /// The waits before each retry, in order.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.first)
            .with_max_delay(self.longest)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(self.retries)
            .build()
    }
}

impl ClientError {
    /// Whether another connection may succeed where this one failed: the
    /// connection was refused, reset or closed, or the orchestrator was
    /// shutting down. Errors about the request itself are not.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Closed => true,
            Self::Server { code, .. } => *code == ErrorCode::ShuttingDown,
            Self::WebSocket(e) | Self::Connect { source: e, .. } => matches!(
                e,
                tungstenite::Error::Io(_)
                    | tungstenite::Error::ConnectionClosed
                    | tungstenite::Error::AlreadyClosed
                    | tungstenite::Error::Protocol(_)
                    | tungstenite::Error::Http(_)
            ),
            Self::Protocol(_) | Self::Timeout(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_longest_and_stop_after_the_retries() {
        let policy = Reconnect {
            retries: 5,
            first: Duration::from_millis(100),
            longest: Duration::from_millis(500),
        };
        let waits: Vec<Duration> = policy.delays().collect();
        assert_eq!(waits.len(), 5);
        // Jitter adds up to the wait itself to each.
        for (wait, base) in waits.iter().zip([100u64, 200, 400, 500, 500]) {
            let base = Duration::from_millis(base);
            assert!(*wait >= base && *wait <= 2 * base, "{wait:?} vs {base:?}");
        }
        let none = Reconnect {
            retries: 0,
            ..policy
        };
        assert_eq!(none.delays().count(), 0);
    }

    #[test]
    fn only_connection_failures_are_retried() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let refused = ClientError::Connect {
            url: "ws://127.0.0.1:9/ws".into(),
            source: refused.into(),
        };
        assert!(refused.is_transient());
        assert!(
            refused
                .to_string()
                .starts_with("connecting to ws://127.0.0.1:9/ws: ")
        );
        assert!(ClientError::Closed.is_transient());
        let shutting_down = ClientError::Server {
            code: ErrorCode::ShuttingDown,
            message: "draining".into(),
        };
        assert!(shutting_down.is_transient());
        let bad = ClientError::Server {
            code: ErrorCode::UnknownVoice,
            message: "no such voice".into(),
        };
        assert!(!bad.is_transient());
        assert!(!ClientError::Timeout(Duration::from_secs(1)).is_transient());
    }
}
